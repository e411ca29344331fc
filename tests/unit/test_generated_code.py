"""The .proto contract is lint-clean and the checked-in generated code matches it.

Both tests run real tools (the code generator, the buf binary) in subprocesses; paths are
taken from this file, so they pass whatever the working directory is.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATOR = REPO_ROOT / "scripts" / "generate_protos.py"


def test_checked_in_generated_code_matches_the_protos() -> None:
    """singura_vault/proto/ is byte-identical to what scripts/generate_protos.py produces."""
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, (
        "singura_vault/proto/ is out of date with protos/; "
        "run `python scripts/generate_protos.py` and commit the result.\n"
        f"{result.stdout}{result.stderr}"
    )


def test_buf_lint_accepts_the_protos() -> None:
    """buf lint, configured by buf.yaml, reports nothing for the .proto files."""
    # buf-bin installs buf beside the interpreter; a missing buf is a broken environment,
    # not a reason to skip the contract check.
    buf = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    if buf is None:
        pytest.fail("buf not found beside sys.executable or on PATH; install the test extra")

    result = subprocess.run(
        [buf, "lint"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, f"buf lint failed:\n{result.stdout}{result.stderr}"
