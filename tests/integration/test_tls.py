"""TLS and mutual TLS on the gRPC port, with certificates made at test time.

The servers here are plain grpc.aio servers with the standard health service and
``singura_vault.tls.server_credentials``: what is under test is the TLS layer, not
the vault's services. The health probe is synchronous, so it runs in a thread
while the server keeps serving on the test's event loop.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import _async as health_aio  # published as grpc_health.v1.health.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from singura_vault import probe as health_probe
from singura_vault.errors import ConfigError
from singura_vault.tls import (
    CERT_VAR,
    CLIENT_CA_VAR,
    KEY_VAR,
    TlsSettings,
    channel_credentials,
    server_credentials,
    tls_settings_from_env,
)
from tests.support.canaries import canary
from tests.support.certs import Pki, make_pki

SERVING = health_pb2.HealthCheckResponse.SERVING
# Long enough for a loaded CI machine; the failures under test come back at once.
RPC_TIMEOUT_S = 5.0
# A refused handshake is retried until the probe's timeout, so keep that short.
PROBE_FAIL_TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with server and client certificates, and a foreign CA with a client."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@asynccontextmanager
async def serving(settings: TlsSettings) -> AsyncIterator[str]:
    """A health-only gRPC server on 127.0.0.1:<random port> with settings' TLS."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(settings))
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


@pytest.fixture(scope="module")
async def tls_address(pki: Pki) -> AsyncIterator[str]:
    """A server with TLS (no client certificate asked for)."""
    settings = tls_settings_from_env({CERT_VAR: str(pki.server_cert), KEY_VAR: str(pki.server_key)})
    assert settings is not None
    assert not settings.mutual
    async with serving(settings) as address:
        yield address


@pytest.fixture(scope="module")
async def mtls_address(pki: Pki) -> AsyncIterator[str]:
    """A server with mutual TLS: a client certificate from the test CA is required."""
    settings = tls_settings_from_env(
        {
            CERT_VAR: str(pki.server_cert),
            KEY_VAR: str(pki.server_key),
            CLIENT_CA_VAR: str(pki.ca_cert),
        }
    )
    assert settings is not None
    assert settings.mutual
    async with serving(settings) as address:
        yield address


async def check(address: str, credentials: grpc.ChannelCredentials | None) -> int:
    """The whole server's health status, over TLS when credentials are given."""
    channel = (
        grpc.aio.insecure_channel(address)
        if credentials is None
        else grpc.aio.secure_channel(address, credentials)
    )
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT_S)
    status: int = response.status
    return status


async def refused(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """The status code of a health check that is expected to fail."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await check(address, credentials)
    return failure.value.code()


# -- TLS ---------------------------------------------------------------------------------


async def test_client_trusting_the_ca_gets_serving_over_tls(pki: Pki, tls_address: str) -> None:
    """A client that trusts the CA completes the handshake and reads SERVING."""
    assert await check(tls_address, channel_credentials(pki.ca_cert)) == SERVING


async def test_plaintext_client_cannot_talk_to_the_tls_port(tls_address: str) -> None:
    """A plaintext client against the TLS port fails with UNAVAILABLE."""
    assert await refused(tls_address, None) is grpc.StatusCode.UNAVAILABLE


async def test_client_trusting_another_ca_refuses_the_server(pki: Pki, tls_address: str) -> None:
    """A client that trusts only a different CA refuses the vault's certificate."""
    credentials = channel_credentials(pki.foreign_ca_cert)
    assert await refused(tls_address, credentials) is grpc.StatusCode.UNAVAILABLE


# -- mutual TLS --------------------------------------------------------------------------


async def test_client_with_a_certificate_from_the_ca_is_admitted(
    pki: Pki, mtls_address: str
) -> None:
    """Under mTLS, a client presenting a certificate signed by the client CA reads SERVING."""
    credentials = channel_credentials(pki.ca_cert, pki.client_cert, pki.client_key)
    assert await check(mtls_address, credentials) == SERVING


async def test_client_without_a_certificate_is_refused(pki: Pki, mtls_address: str) -> None:
    """Under mTLS, a client that presents no certificate is refused in the handshake."""
    credentials = channel_credentials(pki.ca_cert)
    assert await refused(mtls_address, credentials) is grpc.StatusCode.UNAVAILABLE


async def test_client_with_a_certificate_from_a_foreign_ca_is_refused(
    pki: Pki, mtls_address: str
) -> None:
    """Under mTLS, a certificate signed by an unrelated CA is refused."""
    credentials = channel_credentials(pki.ca_cert, pki.foreign_client_cert, pki.foreign_client_key)
    assert await refused(mtls_address, credentials) is grpc.StatusCode.UNAVAILABLE


# -- the health probe --------------------------------------------------------------------


async def test_probe_over_tls_exits_0_when_trusted_and_2_when_not(
    pki: Pki, tls_address: str
) -> None:
    """The probe reports SERVING over TLS with the CA, and a connection failure without it."""
    trusted = await asyncio.to_thread(
        health_probe.probe, tls_address, credentials=channel_credentials(pki.ca_cert)
    )
    assert trusted == (health_probe.EXIT_SERVING, "status: SERVING")
    untrusted = await asyncio.to_thread(
        health_probe.probe,
        tls_address,
        timeout_s=PROBE_FAIL_TIMEOUT_S,
        credentials=channel_credentials(pki.foreign_ca_cert),
    )
    assert untrusted[0] == health_probe.EXIT_CONNECTION_FAILURE
    assert "failed to connect" in untrusted[1]


async def test_probe_server_name_overrides_the_host_checked(pki: Pki, tls_address: str) -> None:
    """--tls-server-name decides which name the certificate must carry."""
    credentials = channel_credentials(pki.ca_cert)
    matching = await asyncio.to_thread(
        health_probe.probe, tls_address, credentials=credentials, server_name="localhost"
    )
    assert matching[0] == health_probe.EXIT_SERVING
    other = await asyncio.to_thread(
        health_probe.probe,
        tls_address,
        timeout_s=PROBE_FAIL_TIMEOUT_S,
        credentials=credentials,
        server_name="vault.example.com",
    )
    assert other[0] == health_probe.EXIT_CONNECTION_FAILURE


async def test_probe_over_mtls_exits_0_with_a_client_cert_and_2_without(
    pki: Pki, mtls_address: str
) -> None:
    """Under mTLS the probe needs a client certificate; without one the handshake fails (2)."""
    admitted = await asyncio.to_thread(
        health_probe.probe,
        mtls_address,
        credentials=channel_credentials(pki.ca_cert, pki.client_cert, pki.client_key),
    )
    assert admitted == (health_probe.EXIT_SERVING, "status: SERVING")
    refused_probe = await asyncio.to_thread(
        health_probe.probe,
        mtls_address,
        timeout_s=PROBE_FAIL_TIMEOUT_S,
        credentials=channel_credentials(pki.ca_cert),
    )
    assert refused_probe[0] == health_probe.EXIT_CONNECTION_FAILURE


# -- settings from the environment -------------------------------------------------------


def body_lines(*paths: Path) -> list[str]:
    """The lines of the files that are content (not PEM BEGIN/END markers)."""
    lines: list[str] = []
    for path in paths:
        text = path.read_text(encoding="utf-8", errors="replace")
        lines += [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("-----")]
    return lines


def refusal(env: dict[str, str]) -> str:
    """The ConfigError message for env; it must never quote any file it names."""
    with pytest.raises(ConfigError) as error:
        tls_settings_from_env(env)
    message = str(error.value)
    named = [Path(value) for value in env.values() if Path(value).is_file()]
    leaked = [line for line in body_lines(*named) if line in message]
    assert not leaked, "a TLS configuration error quoted a file's contents"
    return message


def write_private(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_no_tls_variables_means_plaintext() -> None:
    """With no SINGURA_TLS_* set (or only blanks), there are no TLS settings."""
    assert tls_settings_from_env({}) is None
    assert tls_settings_from_env({CERT_VAR: " ", KEY_VAR: ""}) is None


def test_certificate_without_key_is_refused(pki: Pki) -> None:
    """SINGURA_TLS_CERT alone is refused, naming the missing SINGURA_TLS_KEY."""
    message = refusal({CERT_VAR: str(pki.server_cert)})
    assert f"{CERT_VAR} is set but {KEY_VAR} is not" in message


def test_key_without_certificate_is_refused(pki: Pki) -> None:
    """SINGURA_TLS_KEY alone is refused, naming the missing SINGURA_TLS_CERT."""
    message = refusal({KEY_VAR: str(pki.server_key)})
    assert f"{KEY_VAR} is set but {CERT_VAR} is not" in message


def test_client_ca_without_certificate_and_key_is_refused(pki: Pki) -> None:
    """SINGURA_TLS_CLIENT_CA without the server's own certificate and key is refused."""
    message = refusal({CLIENT_CA_VAR: str(pki.ca_cert)})
    assert f"{CLIENT_CA_VAR} is set but {CERT_VAR} and {KEY_VAR} are not" in message


@pytest.mark.parametrize("variable", [CERT_VAR, KEY_VAR, CLIENT_CA_VAR])
def test_missing_file_is_refused_naming_variable_and_path(
    pki: Pki, tmp_path: Path, variable: str
) -> None:
    """A path that does not exist is refused with the variable and the path in the message."""
    missing = tmp_path / "missing.pem"
    env = {
        CERT_VAR: str(pki.server_cert),
        KEY_VAR: str(pki.server_key),
        CLIENT_CA_VAR: str(pki.ca_cert),
        variable: str(missing),
    }
    assert f"{variable}={missing}: no such file" in refusal(env)


def test_key_readable_by_others_is_refused_with_chmod_hint(pki: Pki, tmp_path: Path) -> None:
    """A private key with mode 0644 is refused, and the message says `chmod 600 <path>`."""
    key = write_private(tmp_path / "key.pem", pki.server_key.read_bytes(), 0o644)
    message = refusal({CERT_VAR: str(pki.server_cert), KEY_VAR: str(key)})
    assert f"{KEY_VAR}={key} is accessible to group or others (mode 0644)" in message
    assert f"chmod 600 {key}" in message


def test_non_pem_files_are_refused_without_quoting_them(pki: Pki, tmp_path: Path) -> None:
    """A file that is not PEM is refused by variable and path; its contents never appear."""
    secret = canary("tls")
    not_pem = write_private(tmp_path / "notes.txt", f"{secret}\n".encode())
    as_cert = refusal({CERT_VAR: str(not_pem), KEY_VAR: str(pki.server_key)})
    assert f"{CERT_VAR}={not_pem} is not a PEM certificate chain" in as_cert
    as_key = refusal({CERT_VAR: str(pki.server_cert), KEY_VAR: str(not_pem)})
    assert f"{KEY_VAR}={not_pem} is not a PEM private key" in as_key
    as_ca = refusal(
        {CERT_VAR: str(pki.server_cert), KEY_VAR: str(pki.server_key), CLIENT_CA_VAR: str(not_pem)}
    )
    assert f"{CLIENT_CA_VAR}={not_pem} is not a PEM CA certificate bundle" in as_ca
    assert not any(secret in message for message in (as_cert, as_key, as_ca))


def test_swapped_certificate_and_key_are_refused(pki: Pki) -> None:
    """A key given as the certificate (and the other way round) is refused by PEM type."""
    message = refusal({CERT_VAR: str(pki.server_key), KEY_VAR: str(pki.server_cert)})
    assert f"{CERT_VAR}={pki.server_key} is not a PEM certificate chain" in message


def test_key_of_another_certificate_is_refused(pki: Pki) -> None:
    """A valid key that does not belong to the certificate is refused before gRPC binds."""
    message = refusal({CERT_VAR: str(pki.server_cert), KEY_VAR: str(pki.client_key)})
    assert f"{KEY_VAR}={pki.client_key} is not the private key of the certificate" in message


def test_passphrase_protected_key_is_refused(pki: Pki, tmp_path: Path) -> None:
    """An encrypted private key is refused with the openssl command that decrypts it."""
    encrypted = write_private(
        tmp_path / "encrypted.pem",
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    message = refusal({CERT_VAR: str(pki.server_cert), KEY_VAR: str(encrypted)})
    assert "passphrase-protected" in message
    assert "openssl pkey" in message


def test_certificate_file_holding_a_private_key_is_refused(pki: Pki, tmp_path: Path) -> None:
    """A certificate file that also holds a private key is refused: certs are not kept secret."""
    combined = tmp_path / "combined.pem"
    combined.write_bytes(pki.server_cert.read_bytes() + pki.server_key.read_bytes())
    message = refusal({CERT_VAR: str(combined), KEY_VAR: str(pki.server_key)})
    assert f"{CERT_VAR}={combined} also contains a private key" in message


def test_relative_paths_are_made_absolute(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths are resolved against the working directory at start."""
    monkeypatch.chdir(pki.server_cert.parent)
    settings = tls_settings_from_env({CERT_VAR: pki.server_cert.name, KEY_VAR: pki.server_key.name})
    assert settings == TlsSettings(cert_file=pki.server_cert, key_file=pki.server_key)


def test_client_certificate_needs_its_key(pki: Pki) -> None:
    """channel_credentials refuses a client certificate without its key, and the reverse."""
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key"):
        channel_credentials(pki.ca_cert, pki.client_cert, None)
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key"):
        channel_credentials(pki.ca_cert, None, pki.client_key)


# -- the health command -------------------------------------------------------------------


async def health_command(*args: str) -> tuple[int, str]:
    """Run `singura-vault health ARGS` without blocking the loop the server runs on."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "singura_vault",
        "health",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, (stdout + stderr).decode()


async def test_health_command_speaks_mtls_when_given_tls_files(pki: Pki, mtls_address: str) -> None:
    """`health --tls-ca/--tls-cert/--tls-key` implies --tls and exits 0 against an mTLS vault."""
    code, output = await health_command(
        "--address",
        mtls_address,
        "--tls-ca",
        str(pki.ca_cert),
        "--tls-cert",
        str(pki.client_cert),
        "--tls-key",
        str(pki.client_key),
    )
    assert code == health_probe.EXIT_SERVING, output
    assert "status: SERVING" in output


async def test_health_command_exits_1_on_unusable_tls_files(pki: Pki, tmp_path: Path) -> None:
    """A client certificate without its key, or a missing CA file, is a usage error (exit 1)."""
    half, half_output = await health_command("--tls-cert", str(pki.client_cert))
    assert half == health_probe.EXIT_BAD_ARGUMENTS
    assert "--tls-key" in half_output
    missing = tmp_path / "missing-ca.pem"
    absent, absent_output = await health_command("--tls-ca", str(missing))
    assert absent == health_probe.EXIT_BAD_ARGUMENTS
    assert f"TLS CA file {missing}: no such file" in absent_output


async def test_vault_serves_its_api_over_mtls(
    pki: Pki, components: Any, access_service: Any
) -> None:
    """The vault itself serves over mTLS: a client with a CA-signed certificate and an API
    key gets answers; one without a certificate never gets to present its key."""
    from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
    from singura_vault.proto.singura.vault.v1 import organizations_pb2_grpc
    from singura_vault.server import VaultServer
    from tests.support.auth import new_key_text

    admin_key = new_key_text()
    await access_service.bootstrap_admin_key(Path("/nonexistent"), admin_key)
    server = VaultServer(components, health_interval_s=0.2)
    settings = TlsSettings(pki.server_cert, pki.server_key, pki.ca_cert)
    port = await server.start("0.0.0.0:0", tls=settings)  # non-loopback is fine with TLS
    auth = (("authorization", f"Bearer {admin_key}"),)
    trusted = grpc.aio.secure_channel(
        f"localhost:{port}",
        channel_credentials(pki.ca_cert, pki.client_cert, pki.client_key),
    )
    anonymous = grpc.aio.secure_channel(f"localhost:{port}", channel_credentials(pki.ca_cert))
    try:
        listed = await organizations_pb2_grpc.OrganizationServiceStub(trusted).ListOrganizations(
            opb.ListOrganizationsRequest(), metadata=auth
        )
        assert list(listed.organizations) == []
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await organizations_pb2_grpc.OrganizationServiceStub(anonymous).ListOrganizations(
                opb.ListOrganizationsRequest(), metadata=auth, timeout=5
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await trusted.close()
        await anonymous.close()
        await server.stop(0)
