"""Runnable jobs, one module each: ``python -m train.NAME``."""
