"""Thin RQ entry points. They take ids only and run inside the app context (see workers.py)."""
