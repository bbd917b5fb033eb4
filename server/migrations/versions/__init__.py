"""One module per revision, oldest first by its number."""
