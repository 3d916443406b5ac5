"""Benchmarks of longjobs on this machine: run with ``make bench`` (``python -m bench``)."""
