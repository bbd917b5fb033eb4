"""The web console (`hedui console`): see app.py."""
