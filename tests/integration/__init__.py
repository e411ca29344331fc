"""Integration tests: a real PostgreSQL, real gRPC channels, vault processes, and
real third-party servers (OAuth provider, OpenBao, PgBouncer, webhook receiver) on
loopback.
"""
