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
pins, so it is byte-identical across machines; tests/test_python_client.py runs ``--check``.
This script must never write outside _proto/.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]  # grpcio-tools ships no types

CLIENT_ROOT = Path(__file__).resolve().parent
PROTO_ROOT = CLIENT_ROOT.parent.parent / "protos"
OUTPUT_DIR = CLIENT_ROOT / "src" / "singura_vault_client" / "_proto"
OUTPUT_PACKAGE = "singura_vault_client._proto"
WELL_KNOWN_TYPES = Path(protoc.__file__).resolve().parent / "_proto"

ROOT_INIT = (
    '"""Protobuf and gRPC code for protos/: generated, do not edit; '
    'run clients/python/generate.py."""\n'
)
PACKAGE_INIT = '"""Generated, do not edit; run clients/python/generate.py."""\n'
IGNORED_NAMES = frozenset({"__pycache__"})


class GenerationError(Exception):
    """protoc, a plugin or the import rewriting failed; the message says which."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 listing drift if _proto/ is stale",
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            return check()
        regenerate()
    except GenerationError as exc:
        print(f"generate: {exc}", file=sys.stderr)
        return 2
    return 0


def regenerate() -> None:
    """Generate beside OUTPUT_DIR, then swap it in: a failed run leaves _proto/ untouched."""
    staging = Path(tempfile.mkdtemp(prefix=".proto-staging-", dir=OUTPUT_DIR.parent))
    try:
        fresh, previous = staging / "new", staging / "old"
        generate(fresh)
        if OUTPUT_DIR.exists():
            OUTPUT_DIR.rename(previous)
        try:
            fresh.rename(OUTPUT_DIR)
        except BaseException:
            if previous.exists():
                previous.rename(OUTPUT_DIR)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"generate: wrote {OUTPUT_DIR.relative_to(CLIENT_ROOT).as_posix()}/")


def check() -> int:
    with tempfile.TemporaryDirectory(prefix="singura-client-proto-") as tmp:
        fresh = Path(tmp) / "_proto"
        generate(fresh)
        drift = compare(expected=fresh, actual=OUTPUT_DIR)
    if not drift:
        return 0
    print(
        "generate: clients/python/src/singura_vault_client/_proto/ does not match protos/; "
        "run `python clients/python/generate.py` and commit the result:",
        file=sys.stderr,
    )
    for line in drift:
        print(f"  {line}", file=sys.stderr)
    return 1


def generate(out: Path) -> None:
    protos = sorted(path.relative_to(PROTO_ROOT).as_posix() for path in PROTO_ROOT.rglob("*.proto"))
    if not protos:
        raise GenerationError(f"no .proto files under {PROTO_ROOT}")
    loose = [proto for proto in protos if "/" not in proto]
    if loose:
        raise GenerationError(f"proto files must live in a package directory: {loose}")
    out.mkdir(parents=True)
    arguments = [
        "grpc_tools.protoc",  # argv[0]; protoc ignores it
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={WELL_KNOWN_TYPES}",
        f"--plugin=protoc-gen-mypy={find_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={find_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        "--mypy_opt=quiet",
        f"--mypy_grpc_out={out}",
        "--mypy_grpc_opt=quiet",
        *(str(PROTO_ROOT / proto) for proto in protos),
    ]
    if protoc.main(arguments) != 0:
        raise GenerationError("protoc failed (its errors are above)")
    roots = sorted({Path(proto).parts[0] for proto in protos})
    for path in sorted(out.rglob("*")):
        if path.suffix in {".py", ".pyi"}:
            rewrite_imports(path, roots)
    for package in [out, *sorted(path for path in out.rglob("*") if path.is_dir())]:
        with (package / "__init__.py").open("w", encoding="utf-8", newline="\n") as file:
            file.write(ROOT_INIT if package == out else PACKAGE_INIT)


def find_plugin(name: str) -> str:
    """A protoc plugin from the running interpreter's environment, else from PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise GenerationError(f"{name} not found; install mypy-protobuf (the server's test extra)")
    return found


def rewrite_imports(path: Path, roots: list[str]) -> None:
    """``from singura.vault.v1 import x_pb2`` becomes ``from singura_vault_client._proto.
    singura.vault.v1 import x_pb2``; in _pb2.py the module name handed to the descriptor
    builder is rewritten too, so the classes' ``__module__`` is where they really live."""
    names = "|".join(re.escape(root) for root in roots)
    text = path.read_text(encoding="utf-8")
    text = re.sub(
        rf"^(\s*(?:from|import)\s+)((?:{names})(?:\.\w+)*\s)",
        rf"\g<1>{OUTPUT_PACKAGE}.\g<2>",
        text,
        flags=re.MULTILINE,
    )
    text = re.sub(
        rf"^(_builder\.BuildTopDescriptorsAndMessages\(DESCRIPTOR, ')((?:{names})\.)",
        rf"\g<1>{OUTPUT_PACKAGE}.\g<2>",
        text,
        flags=re.MULTILINE,
    )
    unaliased = re.search(rf"^\s*import\s+{re.escape(OUTPUT_PACKAGE)}\.[\w.]+\s*$", text, re.M)
    if unaliased:
        raise GenerationError(f"{path.name}: cannot rewrite {unaliased.group().strip()!r}")
    if re.search(r"^\s*(?:from|import)\s+singura_vault[\s.]", text, re.M):
        raise GenerationError(f"{path.name}: imports the server package singura_vault")
    with path.open("w", encoding="utf-8", newline="\n") as file:
        file.write(text)


def compare(expected: Path, actual: Path) -> list[str]:
    label = OUTPUT_DIR.relative_to(CLIENT_ROOT.parent.parent).as_posix()
    expected_files, actual_files = list_files(expected), list_files(actual)
    drift = []
    for name in sorted(expected_files | actual_files):
        if name not in actual_files:
            drift.append(f"{label}/{name} (missing)")
        elif name not in expected_files:
            drift.append(f"{label}/{name} (not generated)")
        elif not filecmp.cmp(expected / name, actual / name, shallow=False):
            drift.append(f"{label}/{name} (differs)")
    return drift


def list_files(root: Path) -> set[str]:
    if not root.is_dir():
        return set()
    return {
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and not IGNORED_NAMES.intersection(path.relative_to(root).parts)
    }


if __name__ == "__main__":
    sys.exit(main())
