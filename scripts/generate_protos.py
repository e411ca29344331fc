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
runs and machines; tests/unit/test_generated_code.py runs ``--check`` to hold the checked-in code to
that. This script must never touch anything outside singura_vault/proto/.
"""

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]  # grpcio-tools ships no types

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
OUTPUT_DIR = REPO_ROOT / "singura_vault" / "proto"
OUTPUT_PACKAGE = "singura_vault.proto"
# google/protobuf/*.proto (timestamp, struct, field_mask, ...) shipped inside grpcio-tools.
WELL_KNOWN_TYPES = Path(protoc.__file__).resolve().parent / "_proto"

# Every .proto file with its comments, as a FileDescriptorSet (served by reflection).
DESCRIPTOR_SET = "descriptors.binpb"

# Byproducts of importing the checked-in code, never written by this script, so not drift.
IGNORED_NAMES = frozenset({"__pycache__"})


@dataclass(frozen=True)
class Target:
    """Where one copy of the generated code goes, and how it is labelled. The server's
    copy is SERVER below; clients/python/generate.py makes the client's (its own
    package, so the client never imports the server) with this same code."""

    output_dir: Path
    output_package: str
    command: str  # what to run to regenerate, as messages and __init__.py files name it
    prefix: str  # of the script's messages
    descriptor_set: bool  # also write DESCRIPTOR_SET (the server's reflection serves it)
    forbidden_import: str | None = None  # a package the generated code must never import

    @property
    def root_init(self) -> str:
        return (
            '"""Protobuf and gRPC code for protos/: generated, do not edit; '
            f'run {self.command}."""\n'
        )

    @property
    def package_init(self) -> str:
        return f'"""Generated, do not edit; run {self.command}."""\n'


SERVER = Target(
    output_dir=OUTPUT_DIR,
    output_package=OUTPUT_PACKAGE,
    command="scripts/generate_protos.py",
    prefix="generate_protos",
    descriptor_set=True,
)


class GenerationError(Exception):
    """protoc, a plugin or the import rewriting failed; the message says which."""


def main(argv: list[str] | None = None, target: Target = SERVER) -> int:
    parser = argparse.ArgumentParser(
        description=f"Regenerate {_label(target)}/ from protos/ (or check that it is current)."
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"do not write; exit 1 and list the files that differ if {_label(target)}/ is stale",
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            return check(target)
        regenerate(target)
    except GenerationError as exc:
        print(f"{target.prefix}: {exc}", file=sys.stderr)
        return 2
    return 0


def _label(target: Target) -> str:
    return target.output_dir.relative_to(REPO_ROOT).as_posix()


def regenerate(target: Target) -> None:
    """Generate into a staging directory beside the output, then swap it in by renames."""
    # The staging directory sits in the same parent so that the renames below stay on one
    # filesystem; a failed generation leaves the checked-in code untouched.
    output = target.output_dir
    staging = Path(tempfile.mkdtemp(prefix=".proto-staging-", dir=output.parent))
    try:
        fresh, previous = staging / "new", staging / "old"
        generate(fresh, target)
        if output.exists():
            output.rename(previous)
        try:
            fresh.rename(output)
        except BaseException:
            if previous.exists():
                previous.rename(output)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"{target.prefix}: wrote {_label(target)}/")


def check(target: Target) -> int:
    """Return 0 if the output is exactly what generate() produces, else list the drift and 1."""
    with tempfile.TemporaryDirectory(prefix="singura-proto-check-") as tmp:
        fresh = Path(tmp) / "proto"
        generate(fresh, target)
        drift = compare(expected=fresh, actual=target.output_dir, label=_label(target))
    if not drift:
        return 0
    print(
        f"{target.prefix}: {_label(target)}/ does not match protos/; "
        f"run `python {target.command}` and commit the result:",
        file=sys.stderr,
    )
    for line in drift:
        print(f"  {line}", file=sys.stderr)
    return 1


def generate(out: Path, target: Target) -> None:
    """Write the complete generated package (code, stubs, __init__.py files) into ``out``."""
    protos = find_protos()
    out.mkdir(parents=True)
    run_protoc(protos, out, descriptor_set=target.descriptor_set)
    roots = sorted({Path(proto).parts[0] for proto in protos})
    for path in sorted(out.rglob("*")):
        if path.suffix in {".py", ".pyi"}:
            rewrite_imports(path, roots, target)
    write_init_files(out, target)


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


def run_protoc(protos: list[str], out: Path, *, descriptor_set: bool) -> None:
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
        # Absolute paths inside --proto_path, so the result does not depend on the cwd; protoc
        # still records them by their path relative to PROTO_ROOT.
        *(str(PROTO_ROOT / proto) for proto in protos),
    ]
    if descriptor_set:
        # The contract with its comments, for server reflection: generated _pb2 modules
        # drop the source info, so `grpcurl describe` would show no documentation.
        arguments[-len(protos) : -len(protos)] = [
            f"--descriptor_set_out={out / DESCRIPTOR_SET}",
            "--include_source_info",
            "--include_imports",
        ]
    if protoc.main(arguments) != 0:
        raise GenerationError("protoc failed (its errors are above)")


def find_plugin(name: str) -> str:
    """A protoc plugin from the running interpreter's environment, else from PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise GenerationError(f"{name} not found; install the test extra (mypy-protobuf)")
    return found


def rewrite_imports(path: Path, roots: list[str], target: Target) -> None:
    """Point imports of our own generated modules (e.g. ``singura.``) at the target's package.

    protoc and mypy-protobuf write ``from singura.vault.v1 import x_pb2 as alias``; that
    becomes ``from singura_vault.proto.singura.vault.v1 import x_pb2 as alias``. In _pb2.py
    modules the module name handed to the descriptor builder is rewritten too, so that the
    message classes' ``__module__`` is the module they really live in (pickle relies on it).
    """
    names = "|".join(re.escape(root) for root in roots)
    text = path.read_text(encoding="utf-8")
    text = re.sub(
        rf"^(\s*(?:from|import)\s+)((?:{names})(?:\.\w+)*\s)",
        rf"\g<1>{target.output_package}.\g<2>",
        text,
        flags=re.MULTILINE,
    )
    text = re.sub(
        rf"^(_builder\.BuildTopDescriptorsAndMessages\(DESCRIPTOR, ')((?:{names})\.)",
        rf"\g<1>{target.output_package}.\g<2>",
        text,
        flags=re.MULTILINE,
    )
    # `import a.b.c_pb2` without an alias would need its uses rewritten as well; neither
    # generator writes that for a proto in a package directory, so refuse rather than guess.
    package = re.escape(target.output_package)
    unaliased = re.search(rf"^\s*import\s+{package}\.[\w.]+\s*$", text, re.M)
    if unaliased:
        raise GenerationError(f"{path.name}: cannot rewrite {unaliased.group().strip()!r}")
    forbidden = target.forbidden_import
    if forbidden and re.search(rf"^\s*(?:from|import)\s+{re.escape(forbidden)}[\s.]", text, re.M):
        raise GenerationError(f"{path.name}: imports the package {forbidden}")
    with path.open("w", encoding="utf-8", newline="\n") as file:
        file.write(text)


def write_init_files(out: Path, target: Target) -> None:
    packages = [out, *sorted(path for path in out.rglob("*") if path.is_dir())]
    for package in packages:
        init = package / "__init__.py"
        with init.open("w", encoding="utf-8", newline="\n") as file:
            file.write(target.root_init if package == out else target.package_init)


def compare(expected: Path, actual: Path, label: str) -> list[str]:
    """One line per file that differs between two generated trees, as repo-relative paths."""
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
