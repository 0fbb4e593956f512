"""Benchmarks for carphooks: ``python -m bench`` (see bench/__main__.py)."""
