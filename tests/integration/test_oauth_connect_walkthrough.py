"""docs/oauth.md's "Try it with the local provider" (connect a workspace), held to what
it says: the provider started with the doc's command as a process of its own, its
printed values pasted as the reader would, and each shell block run in bash with the
real grpcurl and curl against a real `singura-vault serve` in its default
(development) configuration."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.grpcurl import grpcurl_binary
from tests.support.messages import org_message
from tests.support.oauth_provider import argument_parser
from tests.support.vault import Vault
from tests.support.vault_process import serve_process
from tests.support.walkthrough import (
    PROVIDER_START_S,
    as_read,
    bash,
    grpcurl_answers,
    printed_values,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "oauth.md"
SUBSECTION = "### Try it with the local provider"


def subsection() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(SUBSECTION)
    end = re.search(r"\n##+ ", text[start + len(SUBSECTION) :])
    return text[start : start + len(SUBSECTION) + end.start() if end else len(text)]


def sh_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", subsection(), flags=re.DOTALL)


def test_the_provider_command_parses_and_registers_the_redirect_uri() -> None:
    """The doc's provider command is the provider's, with the redirect URI the blocks use."""
    command = shlex.split(sh_blocks()[0])
    assert command[:3] == ["python", "-m", "tests.support.oauth_provider"], command
    options = argument_parser().parse_args(command[3:])
    assert options.redirect_uri
    for block in sh_blocks()[1:]:
        for uri in re.findall(r'"(https://app\.example/[^"]*)"', block):
            assert uri in options.redirect_uri, uri


async def test_the_connect_walkthrough_runs_as_written_against_a_real_vault(
    vault: Vault, service_dsn: str, auth_secret: bytes, root_key: str, tmp_path: Path
) -> None:
    """Register the client with the redirect URI, start, be the browser with curl, be
    the callback with CompleteAuthorization, ask for the token: every block succeeds,
    the connection is new and ACTIVE, and its token is the one the exchange stored."""
    org = (
        await vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message())
        )
    ).organization.id
    command = [sys.executable, *shlex.split(sh_blocks()[0])[1:]]
    grpcurl_dir = str(Path(grpcurl_binary()).parent)
    values = tmp_path / "shell-values"
    # Popen only starts it; its output is read in a thread.
    provider = subprocess.Popen(  # noqa: ASYNC220
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        printed = await asyncio.wait_for(
            asyncio.to_thread(printed_values, provider), PROVIDER_START_S
        )
        async with serve_process(vault, service_dsn, auth_secret, root_key) as address:
            env = {
                **{
                    k: v
                    for k, v in os.environ.items()
                    if not k.startswith(("SINGURA_", "DATABASE_"))
                },
                "PATH": grpcurl_dir + os.pathsep + os.environ.get("PATH", ""),
                "AUTH": f"authorization: Bearer {vault.admin_key}",
                "ORG": org,  # from the walk-through before it
                **printed,
            }
            conn, kept = "", ""
            answers: dict[str, list[dict[str, Any]]] = {}
            for block in sh_blocks()[1:]:
                read = as_read(block, org, conn, address)
                names = re.findall(r"^([A-Z_]+)=", read, flags=re.MULTILINE)
                # The reader's shell keeps the values a block assigned (not the commands
                # that made them: the code is asked for once): `declare -p` saves them.
                keep = f'\ndeclare -p {" ".join(names)} > "{values}"' if names else ""
                # The doc says to run the completion twice ("Run the same command again").
                runs = 2 if "OAuthService/CompleteAuthorization" in block else 1
                for _ in range(runs):
                    code, stdout, stderr = await bash(kept + read + keep, env)
                    assert code == 0, f"{block}\n{stderr}"
                    method = re.findall(r"OAuthService/(\w+)", block)
                    if method and method[-1] != "StartAuthorization":
                        answers.setdefault(method[-1], []).append(grpcurl_answers(stdout)[0])
                if names:
                    kept += values.read_text(encoding="utf-8")
                if "OAuthService/CompleteAuthorization" in block:
                    conn = answers["CompleteAuthorization"][0]["connection"]["id"]
        provider.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(provider.wait, 30) == 0
    finally:
        if provider.poll() is None:
            provider.kill()
        await asyncio.to_thread(provider.wait, 10)

    first, again = answers["CompleteAuthorization"]
    connection = first["connection"]
    assert connection["status"] == "CONNECTION_STATUS_ACTIVE"
    assert connection["platform_user_id"] == connection["id"]
    assert first["requested_scopes"] == first["granted_scopes"] == ["channels:read"]
    assert again["connection"] == connection  # the retry: the same answer
    (token,) = answers["GetAccessToken"]
    assert str(token["access_token"]).startswith("canary-at-")
    assert token["credential"]["version"] == 1
    assert "refreshed" not in token
