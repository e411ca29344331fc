"""Unit tests: no PostgreSQL, no server, no network.

``pytest tests/unit`` runs them alone, in seconds; the PostgreSQL fixtures live in
tests/integration/conftest.py, so a unit test cannot ask for them.
"""
