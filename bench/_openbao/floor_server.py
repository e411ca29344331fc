"""The stack's floor: the least a server built from the vault's parts can do per call.

Run as ``vs_openbao.py --floor-server`` (a subprocess, like ``serve``): a grpc.aio
server on uvloop with the vault's ``CredentialService`` contract, over asyncpg (a pool
of 20, as ``DB_POOL_MAX``) on an embedded PostgreSQL started the way the vault starts
its own (fsync and ``synchronous_commit`` on). Each call is the minimum that keeps the
vault's durability: one statement, in autocommit, so one round trip and one commit.

- ``GetCredential``: a primary-key select of the metadata.
- ``RevealCredential``: one statement that reads the current version and inserts an
  audit row, committed before the value leaves; then AES-256-GCM decryption (one cached
  ``AESGCM`` object).
- ``StoreCredential``: AES-256-GCM encryption, then one statement inserting the new
  version and its audit row.

Everything else the vault does is left out on purpose: no authentication or rate
limit, no interceptor (request ids, deadlines, metrics, tracing, access log), no
row-level security or tenant settings, no per-tenant data keys, no hash chain, no
request validation beyond what protobuf parsing does. What this server serves is an
upper bound for any server made of grpc.aio, asyncpg and this PostgreSQL on the same
machine, so ``floor / OpenBao`` says which ratios those parts can reach at all.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from typing import Any

import _harness as h
import asyncpg
import grpc
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf import timestamp_pb2

from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2_grpc as crgrpc

POOL_SIZE = 20
NONCE_BYTES = 12

SCHEMA = """
CREATE TABLE floor_credentials (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    connection_id uuid NOT NULL,
    type integer NOT NULL,
    version integer NOT NULL,
    nonce bytea NOT NULL,
    ciphertext bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    UNIQUE (connection_id, type, version)
);
CREATE TABLE floor_audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    credential_id uuid NOT NULL,
    action text NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now()
);
"""

GET = "SELECT id, connection_id, type, version, create_time FROM floor_credentials WHERE id = $1"

REVEAL = """
WITH current AS (
    SELECT id, connection_id, type, version, create_time, nonce, ciphertext
    FROM floor_credentials
    WHERE connection_id = $1 AND type = $2
    ORDER BY version DESC
    LIMIT 1
), audited AS (
    INSERT INTO floor_audit (credential_id, action)
    SELECT id, 'credential.revealed' FROM current
)
SELECT * FROM current
"""

STORE = """
WITH stored AS (
    INSERT INTO floor_credentials (connection_id, type, version, nonce, ciphertext)
    SELECT $1, $2, coalesce(max(version), 0) + 1, $3, $4
    FROM floor_credentials
    WHERE connection_id = $1 AND type = $2
    RETURNING id, connection_id, type, version, create_time
), audited AS (
    INSERT INTO floor_audit (credential_id, action)
    SELECT id, 'credential.stored' FROM stored
)
SELECT * FROM stored
"""


def _credential(row: asyncpg.Record) -> crpb.Credential:
    created = timestamp_pb2.Timestamp()
    created.FromDatetime(row["create_time"])
    return crpb.Credential(
        id=str(row["id"]),
        connection_id=str(row["connection_id"]),
        type=row["type"],
        version=row["version"],
        state=crpb.CREDENTIAL_STATE_ACTIVE,
        create_time=created,
    )


class FloorCredentials(crgrpc.CredentialServiceServicer):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))

    async def GetCredential(
        self, request: crpb.GetCredentialRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> crpb.GetCredentialResponse:
        row = await self._pool.fetchrow(GET, uuid.UUID(request.credential_id))
        if row is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such credential")
        return crpb.GetCredentialResponse(credential=_credential(row))

    async def RevealCredential(
        self, request: crpb.RevealCredentialRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> crpb.RevealCredentialResponse:
        row = await self._pool.fetchrow(REVEAL, uuid.UUID(request.connection_id), request.type)
        if row is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such credential")
        value = self._aead.decrypt(row["nonce"], row["ciphertext"], None)
        return crpb.RevealCredentialResponse(
            credential=_credential(row), value=value.decode("utf-8")
        )

    async def StoreCredential(
        self, request: crpb.StoreCredentialRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> crpb.StoreCredentialResponse:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, request.value.encode("utf-8"), None)
        row = await self._pool.fetchrow(
            STORE, uuid.UUID(request.connection_id), request.type, nonce, sealed
        )
        assert row is not None  # an INSERT ... RETURNING of one row
        return crpb.StoreCredentialResponse(credential=_credential(row))


async def _serve(pg: h.Postgres) -> None:
    schema = await asyncpg.connect(pg.superuser_dsn)
    try:
        await schema.execute(SCHEMA)
    finally:
        await schema.close()
    pool = await asyncpg.create_pool(pg.superuser_dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
    server = grpc.aio.server()
    # The floor serves three RPCs; the others answer UNIMPLEMENTED (the generated base
    # class's methods), which the stubs' abstract declarations do not know.
    servicer = FloorCredentials(pool)  # type: ignore[abstract]
    crgrpc.add_CredentialServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    h.emit({"event": "floor_serving", "port": port, "postmaster_pid": pg.postmaster_pid()})
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(None)
        await pool.close()


def floor_server_main() -> int:
    """``vs_openbao.py --floor-server``: serve until SIGTERM, then stop PostgreSQL and
    delete its directory."""
    try:
        with h.embedded_postgres() as pg:
            h.run(_serve(pg))
    except KeyboardInterrupt:
        pass
    sys.stdout.write(json.dumps({"event": "floor_stopped"}) + "\n")
    sys.stdout.flush()
    return 0
