"""clients/typescript/README.md's example, run word for word against a real vault.

The README marks what a reader types or saves: ``<!-- readme-example: run -->`` before
a shell block, ``<!-- readme-example: file NAME -->`` before the contents of a file,
and ``<!-- readme-example: output -->`` before what the example prints. A further
example carries its name (``<!-- readme-example connect: run -->``) and is run by its own
test (tests/integration/test_typescript_connect.py); ``readme_blocks`` picks one example. This test
joins the first two kinds, in order, into one bash script (a file becomes a heredoc),
runs it where README.md's walk-through leaves a newcomer: a vault serving, its admin
key where ``singura-vault keys admin-key`` reads it, the organization ``acme`` already
made, and the client built in the clone (``npm ci``, ``npm run build``). The "clone"
is a temporary folder whose ``clients/typescript`` links to this one, so the
example's ``../vault-example`` is temporary too. The output it prints must be the
README's, but for the random suffix and id.

npm runs with ``prefer-offline``: the example pins the TypeScript and @types/node
versions of the client's own lock, so the client's ``npm ci`` has already put them in
npm's cache. Node and npm are required: a machine without them fails, never skips.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.node_tools import ensure_node_modules, run, tool
from tests.support.typescript_readme import README, TS_DIR, Block, example_env, readme_blocks
from tests.support.vault import Vault

BUILD_TIMEOUT_S = 120
EXAMPLE_TIMEOUT_S = 300
# The stored value in example.ts: it must come back, and never be printed.
EXAMPLE_TOKEN = "xoxb-not-a-real-token"

_CREATED = re.compile(r"^created organization (acme-ts-[0-9a-f]{8}) \(([0-9a-f-]{36})\)$")
_EVENT = re.compile(r"^(\d+) ([a-z_]+\.[a-z_.]+)$")


def as_script(blocks: list[Block]) -> str:
    """One bash script: run blocks as they are, files as quoted heredocs."""
    parts = ["set -euo pipefail"]
    for block in blocks:
        if block.kind == "run":
            parts.append(block.body)
        elif block.kind == "file":
            assert block.file is not None
            assert "README_EXAMPLE_EOF" not in block.body
            parts.append(
                f"cat > {shlex.quote(block.file)} <<'README_EXAMPLE_EOF'\n"
                f"{block.body}README_EXAMPLE_EOF"
            )
    return "\n".join(parts) + "\n"


def _normalized(lines: list[str]) -> list[str]:
    """Output lines with the run's random organization suffix and id taken out."""
    return [
        re.sub(r"acme-ts-[0-9a-f]{8} \([0-9a-f-]{36}\)", "acme-ts-<suffix> (<id>)", line)
        for line in lines
    ]


def test_readme_blocks_are_found_in_order() -> None:
    """The README's example is marked (setup, tsconfig.json, example.ts, the run, its
    output) and pins the TypeScript and @types/node of the client's own lock."""
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    assert [(block.kind, block.file) for block in blocks] == [
        ("run", None),
        ("file", "tsconfig.json"),
        ("file", "example.ts"),
        ("run", None),
        ("output", None),
    ]
    assert 'npm install "$CLIENT"' in blocks[0].body
    assert "node example.js" in blocks[3].body
    # The same versions as the client's devDependencies: `npm ci` there caches them.
    dev = json.loads((TS_DIR / "package.json").read_text(encoding="utf-8"))["devDependencies"]
    for name in ("typescript", "@types/node"):
        assert f"{name}@{dev[name]}" in blocks[0].body, f"the example should pin {name}@{dev[name]}"


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "<redacted>")


def _check_output(stdout: str, printed: str) -> tuple[str, str]:
    """The example's report of one run, against the README's ``printed`` output;
    returns the slug and id of the organization it made."""
    lines = stdout.splitlines()
    created = [m for m in map(_CREATED.match, lines) if m]
    assert len(created) == 1, "no (or several) 'created organization acme-ts-...' lines"
    assert f"revealed version 1: {len(EXAMPLE_TOKEN)} characters, the value stored" in lines
    events = [m for m in map(_EVENT.match, lines) if m]
    sequences = [int(m[1]) for m in events]
    actions = [m[2] for m in events]
    assert len(events) >= 4, f"expected the new organization's audit events, got {actions}"
    assert sequences == sorted(set(sequences)), f"sequences not increasing: {sequences}"
    assert "credential.revealed" in actions, actions
    # A bigint printed by console.log reads `1n`.
    assert not any(re.match(r"^\d+n\b", line) for line in lines), stdout
    report = lines[lines.index(created[0][0]) :]
    assert _normalized(report) == _normalized(printed.splitlines()), (
        "the example's output differs from the README's:\n" + "\n".join(report)
    )
    return created[0][1], created[0][2]


async def test_typescript_readme_example_runs_as_written(vault: Vault, tmp_path: Path) -> None:
    """After README.md's walk-through (org `acme` made), the TypeScript README's blocks,
    pasted as they are, make an organization, store and reveal a value and print the
    audit sequences as plain numbers; run again, they make another organization."""
    npm = tool("npm", "runs the example in clients/typescript/README.md")
    tool("node", "runs the example in clients/typescript/README.md")
    bash = tool("bash", "runs the example in clients/typescript/README.md")
    await ensure_node_modules(npm, TS_DIR)
    code, stdout, stderr = await run(npm, "run", "build", cwd=TS_DIR, limit_s=BUILD_TIMEOUT_S)
    assert code == 0, f"npm run build (tsc) failed (exit {code}):\n{stdout}\n{stderr}"

    # README.md's walk-through made this organization; the example must not collide.
    await vault.organizations.CreateOrganization(
        opb.CreateOrganizationRequest(
            organization=opb.Organization(
                name="Acme", slug="acme", domain="acme.com", plan=opb.PLAN_FREE
            )
        )
    )
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    (data_dir / "admin-api-key").write_text(vault.admin_key + "\n", encoding="ascii")
    (data_dir / "admin-api-key").chmod(0o600)
    clone = tmp_path / "singura-vault"
    (clone / "clients").mkdir(parents=True)
    (clone / "clients" / "typescript").symlink_to(TS_DIR, target_is_directory=True)

    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    script = tmp_path / "readme-example.sh"
    script.write_text(as_script(blocks), encoding="utf-8")
    env = example_env(vault, data_dir)
    code, stdout, stderr = await run(
        bash, str(script), cwd=clone, env=env, limit_s=EXAMPLE_TIMEOUT_S
    )
    output = _redact(f"{stdout}\n{stderr}", vault.admin_key)
    assert code == 0, f"the README example exited {code}:\n{output}"
    assert vault.admin_key not in stdout + stderr, "the API key appeared in the output"
    assert EXAMPLE_TOKEN not in stdout + stderr, "the stored value appeared in the output"
    printed = next(block.body for block in blocks if block.kind == "output")
    first_slug, organization_id = _check_output(stdout, printed)
    made = await vault.organizations.GetOrganization(
        opb.GetOrganizationRequest(organization_id=organization_id)
    )
    assert made.organization.slug == first_slug

    # A newcomer runs it again: the last run block, in the project the first one made.
    last_run = [block for block in blocks if block.kind == "run"][-1]
    code, stdout, stderr = await run(
        bash,
        "-euo",
        "pipefail",
        "-c",
        last_run.body,
        cwd=tmp_path / "vault-example",
        env=env,
        limit_s=EXAMPLE_TIMEOUT_S,
    )
    output = _redact(f"{stdout}\n{stderr}", vault.admin_key)
    assert code == 0, f"the README example's second run exited {code}:\n{output}"
    second_slug, _ = _check_output(stdout, printed)
    assert second_slug != first_slug
