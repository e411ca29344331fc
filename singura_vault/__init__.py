"""singura-vault: a multi-tenant credential vault served over gRPC.

Layers (held by import-linter contracts in pyproject.toml):
``cli`` -> ``server`` -> ``api`` (protobuf <-> domain) -> ``service`` (use cases)
-> ``repositories`` (the only SQL) -> ``db`` (pool, embedded server, migrations).
"""

import os

__version__ = "0.1.0"

# The vault forks only to exec PostgreSQL's own tools (initdb, pg_ctl), often
# while gRPC threads are busy. gRPC's fork handlers are meant for children that
# keep using gRPC; here they only log warnings and, seen in CI, can crash the
# child before it execs. Read by grpc at import, so it is set before any import
# of grpc through this package; an explicit setting in the environment wins.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
