"""Standard gRPC health (following PostgreSQL) and server reflection."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.composition.access import build_access
from singura_vault.config import PoolSettings
from singura_vault.db.embedded import EmbeddedPostgres
from singura_vault.db.pool import Database
from singura_vault.db.setup import (
    OWNER_ROLE,
    SERVICE_ROLE,
    apply_migrations,
    bootstrap_embedded_roles,
)
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from singura_vault.proto.singura.vault.v1 import organizations_pb2_grpc
from singura_vault.server import VAULT_SERVICES, VaultServer
from tests.support.auth import new_key_text
from tests.support.vault import Vault

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_health_check_reports_serving_for_server_and_services(vault: Vault) -> None:
    """Check("") and Check(<each vault service>) answer SERVING; unknown names NOT_FOUND."""
    stub = health_pb2_grpc.HealthStub(vault.channel)
    for service in ("", *VAULT_SERVICES):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == SERVING, service
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_and_describes_the_services(vault: Vault) -> None:
    """Server reflection names every service and resolves their methods without .proto files."""

    def query() -> tuple[set[str], str]:
        # The reflection client is synchronous; it runs in a thread so the
        # server, on this test's event loop, can answer it.
        with grpc.insecure_channel(vault.address) as channel:
            reflection_db = ProtoReflectionDescriptorDatabase(channel)
            services = set(reflection_db.get_services())
            file = reflection_db.FindFileContainingSymbol("singura.vault.v1.ConnectionService")
            return services, file.name

    services, file_name = await asyncio.to_thread(query)
    assert set(VAULT_SERVICES) <= services
    assert "grpc.health.v1.Health" in services
    assert "grpc.reflection.v1alpha.ServerReflection" in services
    assert file_name == "singura/vault/v1/connections.proto"


async def test_reflection_v1_serves_the_documented_descriptors(vault: Vault) -> None:
    """Reflection v1 (what newer clients ask first) answers like v1alpha, and the files it
    returns carry the .proto comments."""
    info = vault.channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="singura.vault.v1.GetOrganizationRequest"
        ),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="grpc.reflection.v1.ServerReflection"
        ),
    ]
    listed, found, own = [response async for response in info(iter(requests))]
    names = {service.name for service in listed.list_services_response.service}
    assert {"grpc.reflection.v1.ServerReflection", *VAULT_SERVICES} <= names
    files = {}
    for raw in found.file_descriptor_response.file_descriptor_proto:
        file = descriptor_pb2.FileDescriptorProto.FromString(raw)
        files[file.name] = file
    organizations = files["singura/vault/v1/organizations.proto"]
    comments = [loc.leading_comments for loc in organizations.source_code_info.location]
    assert " UUID of the organization.\n" in comments
    assert "google/protobuf/field_mask.proto" in files  # dependencies come along
    (v1,) = own.file_descriptor_response.file_descriptor_proto
    assert descriptor_pb2.FileDescriptorProto.FromString(v1).package == "grpc.reflection.v1"


@pytest.fixture
async def own_postgres() -> AsyncIterator[tuple[EmbeddedPostgres, str]]:
    """A private embedded PostgreSQL this test may stop and start; yields (server, service DSN)."""
    base_dir = Path(tempfile.mkdtemp(prefix="sv-health-"))
    server = EmbeddedPostgres(base_dir)
    try:
        cluster = await asyncio.to_thread(server.start)
        await bootstrap_embedded_roles(cluster.dsn(cluster.superuser, "postgres"))
        await apply_migrations(cluster.dsn(OWNER_ROLE, "singura"))
        yield server, cluster.dsn(SERVICE_ROLE, "singura")
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(base_dir, ignore_errors=True)


async def test_health_follows_postgres_down_and_back_up(
    own_postgres: tuple[EmbeddedPostgres, str], key_manager: keys.KeyManager
) -> None:
    """Watch("") goes SERVING -> NOT_SERVING when PostgreSQL stops -> SERVING when it returns."""
    pg, dsn = own_postgres
    db = await Database.connect(dsn, PoolSettings(min_size=1, max_size=2, connect_timeout_ms=1000))
    access = build_access(db, os.urandom(32))
    server = VaultServer(
        Components(db, key_manager=key_manager, access=access), health_interval_s=0.1
    )
    port = await server.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        service_watch = stub.Watch(health_pb2.HealthCheckRequest(service=VAULT_SERVICES[0]))
        assert (await watch.read()).status == SERVING
        assert (await service_watch.read()).status == SERVING

        await asyncio.to_thread(pg.stop)
        assert (await asyncio.wait_for(watch.read(), 30)).status == NOT_SERVING
        assert (await asyncio.wait_for(service_watch.read(), 30)).status == NOT_SERVING
        # While the database is away, calls fail fast and retryably, not INTERNAL.
        organizations = organizations_pb2_grpc.OrganizationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await organizations.ListOrganizations(
                opb.ListOrganizationsRequest(),
                timeout=30,
                metadata=(("authorization", f"Bearer {new_key_text()}"),),
            )
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "retry" in (info.value.details() or "")

        await asyncio.to_thread(pg.start)
        assert (await asyncio.wait_for(watch.read(), 30)).status == SERVING
        assert (await asyncio.wait_for(service_watch.read(), 30)).status == SERVING
        watch.cancel()
        service_watch.cancel()
    finally:
        await channel.close()
        await server.stop(0)
        await db.close()
