"""docs/oauth.md's "Try it on your machine", held to what it says.

The walk-through is read from the doc itself: the provider is started with the doc's
command (`python -m tests.support.oauth_provider`) as a process of its
own, its printed values become the shell's variables as a reader would paste them, and
each shell block runs in bash with the real grpcurl against a real `singura-vault serve`
in its default (development) configuration. A faster check runs the same blocks with a
stand-in grpcurl that only records its arguments: every variable is defined, every
method exists, every JSON body is a valid request.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from google.protobuf import descriptor_pool, json_format
from google.protobuf.message_factory import GetMessageClass

from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import oauth_pb2  # noqa: F401 -- registers the descriptors
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.grpcurl import grpcurl_binary
from tests.support.messages import connection_message, org_message
from tests.support.oauth_provider import PRINTED_NAMES, argument_parser
from tests.support.vault import Vault
from tests.support.vault_process import serve_process
from tests.support.walkthrough import (
    BLOCK_LIMIT_S,
    DOC_ADDRESS,
    PROVIDER_START_S,
    as_read,
    bash,
    grpcurl_answers,
    printed_values,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "oauth.md"
SECTION = "## Try it on your machine"


def section() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else len(text)]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section(), flags=re.DOTALL)


def provider_command() -> list[str]:
    """The doc's command that starts the provider (its first shell block)."""
    command = shlex.split(blocks("sh")[0])
    assert command[:3] == ["python", "-m", "tests.support.oauth_provider"], command
    return command


def session_blocks() -> list[str]:
    """The shell blocks the reader runs in the grpcurl shell, in order."""
    return blocks("sh")[1:]


def test_the_walkthrough_matches_the_provider_and_the_contract() -> None:
    """The provider command parses; the sample output prints the names the provider
    prints; each grpcurl command, run by bash with a recording grpcurl and `set -u`,
    uses only variables the reader has, calls a method that exists, and sends a body
    that is a valid request for it."""
    argument_parser().parse_args(provider_command()[3:])
    (sample,) = blocks("text")
    assigned = re.findall(r"^([A-Z_]+)=", sample, flags=re.MULTILINE)
    assert tuple(assigned) == PRINTED_NAMES

    recorder = (
        'grpcurl() { "$PYTHON" -c \'import json, sys; print(json.dumps(sys.argv[1:]))\' "$@"; }\n'
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHON": sys.executable,
        "AUTH": "authorization: Bearer key",  # README's variable
        **{name: f"value-of-{name.lower()}" for name in PRINTED_NAMES},
    }
    calls: list[list[str]] = []
    assignments = ""
    for block in session_blocks():
        read = as_read(block, "org-id", "conn-id", DOC_ADDRESS)
        script = "set -eu\n" + recorder + assignments + read
        assignments += _assignments(read)
        done = subprocess.run(
            ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=BLOCK_LIMIT_S
        )
        assert done.returncode == 0, f"{block}\n{done.stderr}"
        calls += [json.loads(line) for line in done.stdout.splitlines()]
    assert len(calls) >= 8
    for args in calls:
        assert args[:3] == ["-plaintext", "-H", env["AUTH"]], args
        assert args[5] == DOC_ADDRESS, args
        assert len(args) == 7, args
        assert args[3] == "-d", args
        service, _, method = args[6].partition("/")
        request_type = (
            descriptor_pool.Default().FindServiceByName(service).FindMethodByName(method).input_type
        )
        json_format.Parse(args[4], GetMessageClass(request_type)())  # raises if invalid


def _assignments(block: str) -> str:
    """The block's variable assignments: what the reader's shell keeps for the next
    block (each block runs in a bash of its own)."""
    return "".join(line + "\n" for line in block.splitlines() if re.match(r"[A-Z_]+=", line))


@asynccontextmanager
async def _started_provider() -> AsyncIterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """The provider started with the doc's command; yields it and its printed values."""
    command = [sys.executable, *provider_command()[1:]]
    # Popen only starts it; its output is read in a thread.
    process = subprocess.Popen(  # noqa: ASYNC220
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # Killing the process (finally, below) ends a read still waiting for a line.
        values = await asyncio.wait_for(
            asyncio.to_thread(printed_values, process), PROVIDER_START_S
        )
        yield process, values
    finally:
        if process.poll() is None:
            process.kill()
        await asyncio.to_thread(process.wait, 10)


async def test_the_walkthrough_runs_as_written_against_a_real_vault(
    vault: Vault, service_dsn: str, auth_secret: bytes, root_key: str
) -> None:
    """The provider the doc starts, a `serve` in its default configuration (loopback
    http allowed outside production), README's organization and connection: every
    block does what the doc says, and Ctrl-C stops the provider."""
    # README's session: an organization, a connection with an access token of no expiry.
    org = (
        await vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message())
        )
    ).organization.id
    readme_conn = (
        await vault.connections.CreateConnection(
            cpb.CreateConnectionRequest(connection=connection_message(org))
        )
    ).connection.id
    await vault.credentials.StoreCredential(
        crpb.StoreCredentialRequest(
            organization_id=org,
            connection_id=readme_conn,
            type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
            value="canary-readme-xoxb",
        )
    )
    grpcurl_dir = str(Path(grpcurl_binary()).parent)
    async with (
        serve_process(vault, service_dsn, auth_secret, root_key) as address,
        _started_provider() as (provider, printed),
    ):
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SINGURA_", "DATABASE_"))},
            "PATH": grpcurl_dir + os.pathsep + os.environ.get("PATH", ""),
            "AUTH": f"authorization: Bearer {vault.admin_key}",
            **printed,
        }
        conn = ""
        assignments = ""
        results: list[tuple[str, int, str, str]] = []
        for block in session_blocks():
            read = as_read(block, org, conn, address)
            runs = 2 if "OAuthService/GetAccessToken" in block else 1  # "ask again"
            for _ in range(runs):
                code, stdout, stderr = await bash(assignments + read, env)
                results.append((block, code, stdout, stderr))
            assignments += _assignments(read)
            if "ConnectionService/CreateConnection" in block:
                assert code == 0, stderr
                conn = grpcurl_answers(stdout)[0]["connection"]["id"]
        provider.send_signal(signal.SIGINT)  # Ctrl-C
        assert await asyncio.to_thread(provider.wait, 30) == 0

    # The block that registers a wrong secret ends with the refresh it makes fail;
    # every other block succeeds.
    for block, code, _, stderr in results:
        if '"client_secret": "wrong"' not in block:
            assert code == 0, f"{block}\n{stderr}"
    by_method: dict[str, list[tuple[int, str, str]]] = {}
    for block, code, stdout, stderr in results:
        methods = re.findall(r"singura\.vault\.v1\.\w+/(\w+)", block)
        if methods:
            by_method.setdefault(methods[-1], []).append((code, stdout, stderr))

    first, second = (grpcurl_answers(stdout)[0] for _, stdout, _ in by_method["GetAccessToken"])
    assert first["refreshed"] is True
    assert first["credential"]["version"] == 1
    assert first["access_token"].startswith("canary-at-")  # the provider's, not README's
    # Tokens live 60 s, less than min_valid_for: the second call gets the same token.
    assert "refreshed" not in second
    assert second["access_token"] == first["access_token"]

    wrong, fixed = by_method["RefreshConnection"]
    code, _, stderr = wrong
    assert code != 0
    for fragment in (
        "FailedPrecondition",
        "invalid_client",
        "SetOAuthClient",
        "need not reconnect",
    ):
        assert fragment in stderr, stderr
    assert grpcurl_answers(fixed[1])[-1]["refreshed"] is True
