"""A vault served in this process on 127.0.0.1:<random port>, and client stubs of
every service on a channel (with the admin key, another key or none)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import grpc

from singura_vault.composition import Components
from singura_vault.db.pool import Database
from singura_vault.proto.singura.vault.v1 import (
    access_pb2_grpc,
    connections_pb2_grpc,
    credentials_pb2_grpc,
    keys_pb2_grpc,
    oauth_pb2_grpc,
    organizations_pb2_grpc,
)
from singura_vault.server import VaultServer
from singura_vault.service.access import AccessService
from tests.support.auth import bearer, new_key_text


@dataclass
class Stubs:
    """Client stubs of every vault service on one channel."""

    channel: grpc.aio.Channel
    organizations: organizations_pb2_grpc.OrganizationServiceStub
    connections: connections_pb2_grpc.ConnectionServiceStub
    credentials: credentials_pb2_grpc.CredentialServiceStub
    access: access_pb2_grpc.AccessServiceStub
    keys: keys_pb2_grpc.KeyServiceStub
    oauth: oauth_pb2_grpc.OAuthServiceStub

    @classmethod
    def on(cls, channel: grpc.aio.Channel, **fields: Any) -> Self:
        """Stubs of every service on ``channel``; ``fields`` are a subclass's own fields."""
        return cls(
            channel=channel,
            organizations=organizations_pb2_grpc.OrganizationServiceStub(channel),
            connections=connections_pb2_grpc.ConnectionServiceStub(channel),
            credentials=credentials_pb2_grpc.CredentialServiceStub(channel),
            access=access_pb2_grpc.AccessServiceStub(channel),
            keys=keys_pb2_grpc.KeyServiceStub(channel),
            oauth=oauth_pb2_grpc.OAuthServiceStub(channel),
            **fields,
        )


@dataclass
class Vault(Stubs):
    """A running vault, and stubs authenticated with its admin key."""

    server: VaultServer
    address: str
    admin_key: str
    access_service: AccessService
    db: Database
    _channels: list[grpc.aio.Channel]

    def as_key(self, key: str | None) -> Stubs:
        """Stubs on a new channel that send ``key`` (None: no authorization at all)."""
        interceptors = bearer(key) if key is not None else []
        channel = grpc.aio.insecure_channel(self.address, interceptors=interceptors)
        self._channels.append(channel)
        return Stubs.on(channel)


async def start_vault(components: Components, **server_options: object) -> Vault:
    """Serve ``components`` on 127.0.0.1:<random port> with a fresh admin key and a
    channel using it; ``server_options`` are VaultServer's keyword options."""
    access = components.access
    assert access is not None, "start_vault serves an authenticating vault"
    admin_key = new_key_text()
    await access.bootstrap_admin_key(Path("/nonexistent"), admin_key)
    server = VaultServer(
        components,
        health_interval_s=0.2,
        **server_options,  # type: ignore[arg-type]  # VaultServer's keyword options, passed through
    )
    port = await server.start("127.0.0.1:0")
    address = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(address, interceptors=bearer(admin_key))
    return Vault.on(
        channel,
        server=server,
        address=address,
        admin_key=admin_key,
        access_service=access,
        db=components.db,
        _channels=[channel],
    )


async def stop_vault(vault: Vault) -> None:
    for channel in vault._channels:
        await channel.close()
    await vault.server.stop(0)
