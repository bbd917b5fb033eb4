"""Benchmarks: run them apart from the tests, on a quiet machine:

    .venv/bin/pytest -o addopts="" tests/benchmarks --benchmark-only --benchmark-columns=min,median,mean,max,rounds

Results and their interpretation are in BENCHMARKS.md.
"""

from tests.e2e.conftest import up  # noqa: F401  (the `hedui up` deployment, reused)
