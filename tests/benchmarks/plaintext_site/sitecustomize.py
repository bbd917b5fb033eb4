"""Loaded at the start of every Python process whose PYTHONPATH begins here (the plaintext
baseline's party processes, see tests/benchmarks/plaintext.py)."""

from tests.benchmarks import plaintext

plaintext.install()
