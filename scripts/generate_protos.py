"""Regenerate the Python protobuf and gRPC code in singura_vault/proto/ from protos/.

    python scripts/generate_protos.py          # regenerate; replaces singura_vault/proto/
    python scripts/generate_protos.py --check  # exit 1, listing drifted files, if it is stale

Every ``protos/**/*.proto`` file is compiled with grpcio-tools' bundled protoc into ``_pb2.py``
and ``_pb2_grpc.py`` modules plus mypy-protobuf ``.pyi`` stubs, and into one descriptor set
with the comments (``descriptors.binpb``, which server reflection serves). protoc names a
module after its proto path (``singura.vault.v1.organizations_pb2``), but ours live under
``singura_vault.proto``, so the imports between our own generated modules are rewritten to
that prefix afterwards; ``google.protobuf`` imports are left alone.

singura_vault/proto/ belongs to this script: it is replaced wholesale on every run, so nothing
hand-written may live there. The output depends only on the .proto files and the pinned
grpcio-tools and mypy-protobuf versions (see pyproject.toml), so it is byte-identical across
runs and machines; tests/test_generated_code.py runs ``--check`` to hold the checked-in code to
that. This script must never touch anything outside singura_vault/proto/.
"""

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]  # grpcio-tools ships no types

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
OUTPUT_DIR = REPO_ROOT / "singura_vault" / "proto"
OUTPUT_PACKAGE = "singura_vault.proto"
# google/protobuf/*.proto (timestamp, struct, field_mask, ...) shipped inside grpcio-tools.
WELL_KNOWN_TYPES = Path(protoc.__file__).resolve().parent / "_proto"

ROOT_INIT = (
    '"""Protobuf and gRPC code for protos/: generated, do not edit; '
    'run scripts/generate_protos.py."""\n'
)
PACKAGE_INIT = '"""Generated, do not edit; run scripts/generate_protos.py."""\n'
# Every .proto file with its comments, as a FileDescriptorSet (served by reflection).
DESCRIPTOR_SET = "descriptors.binpb"

# Byproducts of importing the checked-in code, never written by this script, so not drift.
IGNORED_NAMES = frozenset({"__pycache__"})


class GenerationError(Exception):
    """protoc, a plugin or the import rewriting failed; the message says which."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Regenerate singura_vault/proto/ from protos/ (or check that it is current)."
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 and list the files that differ if singura_vault/proto/ is stale",
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            return check()
        regenerate()
    except GenerationError as exc:
        print(f"generate_protos: {exc}", file=sys.stderr)
        return 2
    return 0


def regenerate() -> None:
    """Generate into a staging directory beside OUTPUT_DIR, then swap it in by renames."""
    # The staging directory sits in the same parent so that the renames below stay on one
    # filesystem; a failed generation leaves the checked-in code untouched.
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
    print(f"generate_protos: wrote {OUTPUT_DIR.relative_to(REPO_ROOT).as_posix()}/")


def check() -> int:
    """Return 0 if OUTPUT_DIR is exactly what generate() produces, else list the drift and 1."""
    with tempfile.TemporaryDirectory(prefix="singura-proto-check-") as tmp:
        fresh = Path(tmp) / "proto"
        generate(fresh)
        drift = compare(expected=fresh, actual=OUTPUT_DIR)
    if not drift:
        return 0
    print(
        "generate_protos: singura_vault/proto/ does not match protos/; "
        "run `python scripts/generate_protos.py` and commit the result:",
        file=sys.stderr,
    )
    for line in drift:
        print(f"  {line}", file=sys.stderr)
    return 1


def generate(out: Path) -> None:
    """Write the complete generated package (code, stubs, __init__.py files) into ``out``."""
    protos = find_protos()
    out.mkdir(parents=True)
    run_protoc(protos, out)
    roots = sorted({Path(proto).parts[0] for proto in protos})
    for path in sorted(out.rglob("*")):
        if path.suffix in {".py", ".pyi"}:
            rewrite_imports(path, roots)
    write_init_files(out)


def find_protos() -> list[str]:
    """The .proto files as protoc names them: paths relative to PROTO_ROOT, sorted."""
    protos = sorted(path.relative_to(PROTO_ROOT).as_posix() for path in PROTO_ROOT.rglob("*.proto"))
    if not protos:
        raise GenerationError(f"no .proto files under {PROTO_ROOT}")
    # A file directly in protos/ would become a top-level module whose imports the rewrite
    # below does not handle; buf's PACKAGE_DIRECTORY_MATCH rules it out as well.
    loose = [proto for proto in protos if "/" not in proto]
    if loose:
        raise GenerationError(f"proto files must live in a package directory: {loose}")
    return protos


def run_protoc(protos: list[str], out: Path) -> None:
    mypy_plugin = find_plugin("protoc-gen-mypy")
    mypy_grpc_plugin = find_plugin("protoc-gen-mypy_grpc")
    arguments = [
        "grpc_tools.protoc",  # argv[0]; protoc ignores it
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={WELL_KNOWN_TYPES}",
        f"--plugin=protoc-gen-mypy={mypy_plugin}",
        f"--plugin=protoc-gen-mypy_grpc={mypy_grpc_plugin}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        "--mypy_opt=quiet",
        f"--mypy_grpc_out={out}",
        "--mypy_grpc_opt=quiet",
        # The contract with its comments, for server reflection: generated _pb2 modules
        # drop the source info, so `grpcurl describe` would show no documentation.
        f"--descriptor_set_out={out / DESCRIPTOR_SET}",
        "--include_source_info",
        "--include_imports",
        # Absolute paths inside --proto_path, so the result does not depend on the cwd; protoc
        # still records them by their path relative to PROTO_ROOT.
        *(str(PROTO_ROOT / proto) for proto in protos),
    ]
    if protoc.main(arguments) != 0:
        raise GenerationError("protoc failed (its errors are above)")


def find_plugin(name: str) -> str:
    """A protoc plugin from the running interpreter's environment, else from PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise GenerationError(f"{name} not found; install the test extra (mypy-protobuf)")
    return found


def rewrite_imports(path: Path, roots: list[str]) -> None:
    """Point imports of our own generated modules (e.g. ``singura.``) at OUTPUT_PACKAGE.

    protoc and mypy-protobuf write ``from singura.vault.v1 import x_pb2 as alias``; that
    becomes ``from singura_vault.proto.singura.vault.v1 import x_pb2 as alias``. In _pb2.py
    modules the module name handed to the descriptor builder is rewritten too, so that the
    message classes' ``__module__`` is the module they really live in (pickle relies on it).
    """
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
    # `import a.b.c_pb2` without an alias would need its uses rewritten as well; neither
    # generator writes that for a proto in a package directory, so refuse rather than guess.
    unaliased = re.search(rf"^\s*import\s+{re.escape(OUTPUT_PACKAGE)}\.[\w.]+\s*$", text, re.M)
    if unaliased:
        raise GenerationError(f"{path.name}: cannot rewrite {unaliased.group().strip()!r}")
    with path.open("w", encoding="utf-8", newline="\n") as file:
        file.write(text)


def write_init_files(out: Path) -> None:
    packages = [out, *sorted(path for path in out.rglob("*") if path.is_dir())]
    for package in packages:
        init = package / "__init__.py"
        with init.open("w", encoding="utf-8", newline="\n") as file:
            file.write(ROOT_INIT if package == out else PACKAGE_INIT)


def compare(expected: Path, actual: Path) -> list[str]:
    """One line per file that differs between two generated trees, as repo-relative paths."""
    label = OUTPUT_DIR.relative_to(REPO_ROOT).as_posix()
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
