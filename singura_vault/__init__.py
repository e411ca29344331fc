"""singura-vault: a multi-tenant credential vault served over gRPC.

Layers (held by import-linter contracts in pyproject.toml):
``cli`` -> ``server`` -> ``api`` (protobuf <-> domain) -> ``service`` (use cases)
-> ``repositories`` (the only SQL) -> ``db`` (pool, embedded server, migrations).
"""

__version__ = "0.1.0"
