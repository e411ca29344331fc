"""The ``singura-vault`` command at its edges: what it says and how it exits when the
organization is unknown, the key is too weak, the admin key file is missing, nothing
listens, or no command is given; and that every command explains itself in --help."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from singura_vault.cli import build_parser
from singura_vault.cli._common import EXIT_CONFIG, EXIT_USAGE
from singura_vault.probe import EXIT_CONNECTION_FAILURE
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import keys_pb2 as kpb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.messages import org_message
from tests.support.vault import Vault
from tests.support.vault_process import serve_process_handle

CLI = [sys.executable, "-m", "singura_vault"]
KEY_FORMAT = re.compile(r"svk_[a-z0-9]{16}_[A-Za-z0-9_-]{43}")


def run(args: list[str], data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the command with a private data dir and none of the caller's vault settings;
    the timeout only guards the suite: a command that hangs fails the test."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SINGURA_"))}
    environ.update(SINGURA_DATA_DIR=str(data_dir), **env)
    return subprocess.run(
        [*CLI, *args], env=environ, capture_output=True, text=True, timeout=60, check=False
    )


async def run_async(
    args: list[str], data_dir: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """`run` off the event loop, which serves the `vault` fixture."""
    return await asyncio.to_thread(run, args, data_dir, **env)


async def new_org(vault: Vault) -> str:
    created = await vault.organizations.CreateOrganization(
        opb.CreateOrganizationRequest(organization=org_message())
    )
    return created.organization.id


# -- keys repair ---------------------------------------------------------------------------


async def test_repair_of_an_unknown_organization_is_not_found(vault: Vault, tmp_path: Path) -> None:
    """`keys repair --organization` with an id no organization has is NOT_FOUND and
    exits 1 (it used to print "0 checked" and exit 0); an organization that exists but
    holds no credentials still reports 0 checked."""
    unknown = str(uuid.uuid4())
    repaired = await run_async(
        ["keys", "repair", "--organization", unknown, "--address", vault.address],
        tmp_path,
        SINGURA_API_KEY=vault.admin_key,
    )
    assert repaired.returncode == 1, repaired.stdout
    assert f"error: NOT_FOUND: organization {unknown} not found" in repaired.stderr
    assert "checked" not in repaired.stdout
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await vault.keys.RepairCredentialKeys(
            kpb.RepairCredentialKeysRequest(organization_id=unknown)
        )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND

    empty = await new_org(vault)
    report = await vault.keys.RepairCredentialKeys(
        kpb.RepairCredentialKeysRequest(organization_id=empty)
    )
    assert (report.checked, len(report.repaired)) == (0, 0)


async def test_repair_refused_to_an_organization_key_names_the_repair(
    vault: Vault, tmp_path: Path
) -> None:
    """A reader key is refused `keys repair` with a message naming the repair, with or
    without --organization (without, the command lists organizations first, and the
    refusal used to say "read key status")."""
    org = await new_org(vault)
    reader = (
        await vault.access.CreateApiKey(
            apb.CreateApiKeyRequest(
                organization_id=org, roles=[apb.API_KEY_ROLE_READER], name="reader"
            )
        )
    ).secret
    for scope in ([], ["--organization", org]):
        refused = await run_async(
            ["keys", "repair", *scope, "--address", vault.address],
            tmp_path,
            SINGURA_API_KEY=reader,
        )
        assert refused.returncode == 1, refused.stdout
        assert (
            "error: PERMISSION_DENIED: only an admin API key may repair credential key versions"
            in refused.stderr
        ), scope
        assert "key status" not in refused.stderr
        assert reader not in refused.stdout + refused.stderr


# -- the admin key -------------------------------------------------------------------------


def test_a_data_dir_without_an_admin_key_file_says_why_and_how(tmp_path: Path) -> None:
    """`keys admin-key` on a data dir that has no admin-api-key (a restored vault's, say)
    names the file, says restore writes none and how to register a new key, and exits 2,
    as `keys status` does when it finds no API key there."""
    printed = run(["keys", "admin-key"], tmp_path)
    assert printed.returncode == EXIT_CONFIG, printed.stderr
    assert printed.stdout == ""
    message = printed.stderr
    assert f"this data directory has no admin key file ({tmp_path / 'admin-api-key'})" in message
    assert "`restore` writes no key file" in message
    assert "SINGURA_BOOTSTRAP_ADMIN_KEY" in message
    assert "singura-vault keys generate-admin-key" in message
    assert "set SINGURA_DATA_DIR" not in message  # it is set, to this very directory
    status = run(["keys", "status", "--address", "127.0.0.1:1"], tmp_path)
    assert status.returncode == printed.returncode == EXIT_CONFIG
    assert "no API key: SINGURA_API_KEY is not set, and this data directory" in status.stderr


async def test_a_generated_admin_key_is_registered_by_serve(
    service_dsn: str, auth_secret: bytes, root_key: str, tmp_path: Path
) -> None:
    """`keys generate-admin-key` prints a key of the API key format that, set as
    SINGURA_BOOTSTRAP_ADMIN_KEY, serve registers as an admin key (the way to a first
    admin key for a restored database)."""
    generated = await run_async(["keys", "generate-admin-key"], tmp_path)
    assert generated.returncode == 0, generated.stderr
    key = generated.stdout.strip()
    assert KEY_FORMAT.fullmatch(key)
    assert "SINGURA_BOOTSTRAP_ADMIN_KEY" in generated.stderr
    assert key not in generated.stderr
    again = await run_async(["keys", "generate-admin-key"], tmp_path)
    assert again.stdout.strip() != key
    async with serve_process_handle(key, service_dsn, auth_secret, root_key) as (address, _):
        status = await run_async(
            ["keys", "status", "--address", address], tmp_path, SINGURA_API_KEY=key
        )
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("provider: ")


# -- health ----------------------------------------------------------------------------------


def closed_port() -> int:
    """A port nothing listens on (bound for a moment, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_health_reports_a_refused_connection_at_once(tmp_path: Path) -> None:
    """A refused connection is a connection failure (exit 2) named as refused, reported
    without waiting out --timeout: with 600 s, only a prompt answer finishes within the
    run's 60 s guard."""
    address = f"127.0.0.1:{closed_port()}"
    probed = run(["health", "--address", address, "--timeout", "600"], tmp_path)
    assert probed.returncode == EXIT_CONNECTION_FAILURE
    assert f"failed to connect to {address}: the connection was refused" in probed.stderr


# -- no command, and --help ----------------------------------------------------------------


def test_no_command_prints_the_help_and_exits_as_a_usage_error(tmp_path: Path) -> None:
    """Bare `singura-vault` prints the whole help, with the commands and what each does,
    on stderr, and exits 1 like every usage error (docs/operations.md#exit-codes)."""
    bare = run([], tmp_path)
    assert bare.returncode == EXIT_USAGE == 1
    assert bare.stdout == ""
    assert bare.stderr.startswith("usage: singura-vault")
    assert "Multi-tenant credential vault served over gRPC." in bare.stderr
    for command in ("serve", "health", "keys", "audit", "migrate"):
        assert re.search(rf"^\s+{command}\s+\S", bare.stderr, re.MULTILINE), command


def leaf_parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every command that runs something ("keys repair"), with its parser."""

    def walk(
        parser: argparse.ArgumentParser, path: tuple[str, ...]
    ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not groups:
            yield " ".join(path), parser
        for group in groups:
            for name, child in group.choices.items():
                yield from walk(child, (*path, name))

    yield from walk(build_parser(), ())


LEAVES = dict(leaf_parsers())


@pytest.mark.parametrize("command", sorted(LEAVES))
def test_every_command_describes_itself_in_its_help(command: str) -> None:
    """Each command's --help has a description beyond its one-line summary."""
    description = LEAVES[command].description
    assert description, f"`singura-vault {command} --help` has no description"
    assert len(description) > 60


def test_the_walk_reaches_every_command() -> None:
    """The description test above covers nested commands too, not only the top level."""
    assert {"version", "health", "migrate status", "keys admin-key", "audit prune"} <= set(LEAVES)
