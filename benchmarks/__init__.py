"""Benchmarks: ``python -m benchmarks.NAME`` prints a markdown table and writes JSON."""
