"""Regenerate the client's protobuf and gRPC modules (src/singura_vault_client/_proto/).

    python clients/python/generate.py          # regenerate; replaces _proto/
    python clients/python/generate.py --check  # exit 1, listing drifted files, if it is stale

Every ``../../protos/**/*.proto`` file is compiled with grpcio-tools' bundled protoc into
``_pb2.py`` and ``_pb2_grpc.py`` modules plus mypy-protobuf ``.pyi`` stubs. protoc names a
module after its proto path (``singura.vault.v1.organizations_pb2``); ours live under
``singura_vault_client._proto``, so imports between our own generated modules are rewritten to
that prefix: the client never imports the server package (``singura_vault``), which is a
separate distribution. ``google.protobuf`` imports are left alone.

_proto/ belongs to this script and is replaced wholesale on every run. The output depends only
on the .proto files and the grpcio-tools and mypy-protobuf versions the server's test extra
pins, so it is byte-identical across machines; tests/integration/test_python_client.py runs
``--check``.
This script must never write outside _proto/. The machinery is the server's own
(scripts/generate_protos.py, with this client's Target), so the two copies cannot
drift apart in how they are made.
"""

from __future__ import annotations

import sys
from pathlib import Path

CLIENT_ROOT = Path(__file__).resolve().parent
# Repository tooling, not part of the client's distribution: it runs from a clone.
sys.path.insert(0, str(CLIENT_ROOT.parent.parent / "scripts"))

import generate_protos  # noqa: E402 - found through the path above

CLIENT = generate_protos.Target(
    output_dir=CLIENT_ROOT / "src" / "singura_vault_client" / "_proto",
    output_package="singura_vault_client._proto",
    command="clients/python/generate.py",
    prefix="generate",
    descriptor_set=False,
    forbidden_import="singura_vault",
)


if __name__ == "__main__":
    sys.exit(generate_protos.main(target=CLIENT))
