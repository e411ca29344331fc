"""Generated, do not edit; run clients/python/generate.py."""
