"""gRPC servicer for KeyService: protobuf <-> domain mapping only."""

from __future__ import annotations

from typing import Any

import grpc

from singura_vault.api._convert import timestamp
from singura_vault.domain.key_management import (
    DataKeyInfo,
    OrganizationKeyMigration,
    OrganizationKeyProviderRow,
    RewrapJob,
)
from singura_vault.errors import InvalidArgument
from singura_vault.proto.singura.vault.v1 import keys_pb2 as pb
from singura_vault.proto.singura.vault.v1 import keys_pb2_grpc as pb_grpc
from singura_vault.service.key_admin import KeyAdminService
from singura_vault.service.organization_keys import OrganizationKeyService

Context = grpc.aio.ServicerContext[Any, Any]


def job_to_proto(job: RewrapJob) -> pb.RewrapJob:
    return pb.RewrapJob(
        id=str(job.id),
        state=pb.RewrapJobState.Value(f"REWRAP_JOB_STATE_{job.state.upper()}"),
        total=job.total,
        done=job.done,
        failed=job.failed,
        started_by=job.started_by,
        create_time=timestamp(job.created_at),
        update_time=timestamp(job.updated_at),
        finish_time=timestamp(job.finished_at),
    )


def data_key_to_proto(key: DataKeyInfo, credential_count: int = 0) -> pb.DataKeyVersion:
    return pb.DataKeyVersion(
        organization_id=str(key.organization_id),
        version=key.version,
        root_key_id=key.root_key_id if key.state == "active" else "",
        state=key.state.upper(),
        credential_count=credential_count,
        create_time=timestamp(key.created_at),
    )


def organization_key_provider_to_proto(
    provider: OrganizationKeyProviderRow,
) -> pb.OrganizationKeyProvider:
    """Never the token: the response has no field for it."""
    return pb.OrganizationKeyProvider(
        id=str(provider.id),
        organization_id=str(provider.organization_id),
        address=provider.address,
        mount=provider.mount,
        key_name=provider.key_name,
        created_by=provider.created_by,
        create_time=timestamp(provider.created_at),
    )


def organization_key_migration_to_proto(
    migration: OrganizationKeyMigration,
) -> pb.OrganizationKeyMigration:
    return pb.OrganizationKeyMigration(
        id=str(migration.id),
        organization_id=str(migration.organization_id),
        target_provider_id=(
            str(migration.target_provider_id) if migration.target_provider_id else ""
        ),
        state=pb.OrganizationKeyMigrationState.Value(
            f"ORGANIZATION_KEY_MIGRATION_STATE_{migration.state.upper()}"
        ),
        total=migration.total,
        done=migration.done,
        started_by=migration.started_by,
        create_time=timestamp(migration.created_at),
        update_time=timestamp(migration.updated_at),
        finish_time=timestamp(migration.finished_at),
    )


class KeyServicer(pb_grpc.KeyServiceServicer):
    def __init__(self, service: KeyAdminService, organization_keys: OrganizationKeyService) -> None:
        self._service = service
        self._organization_keys = organization_keys

    async def GetKeyStatus(
        self, request: pb.GetKeyStatusRequest, context: Context
    ) -> pb.GetKeyStatusResponse:
        status = await self._service.status(request.organization_id)
        response = pb.GetKeyStatusResponse(
            provider=status.provider,
            root_keys=[
                pb.RootKeyVersion(id=r.id, primary=r.primary, data_key_count=r.data_key_count)
                for r in status.root_keys
            ],
            data_keys=[data_key_to_proto(d.info, d.credential_count) for d in status.data_keys],
        )
        if status.latest_job is not None:
            response.latest_rewrap_job.CopyFrom(job_to_proto(status.latest_job))
        return response

    async def RotateRootKey(
        self, request: pb.RotateRootKeyRequest, context: Context
    ) -> pb.RotateRootKeyResponse:
        primary, count = await self._service.rotate_root_key()
        return pb.RotateRootKeyResponse(primary_root_key_id=primary, rewrapped_data_keys=count)

    async def RotateDataKey(
        self, request: pb.RotateDataKeyRequest, context: Context
    ) -> pb.RotateDataKeyResponse:
        created = await self._service.rotate_data_key(request.organization_id)
        return pb.RotateDataKeyResponse(data_keys=[data_key_to_proto(k) for k in created])

    async def StartRewrap(
        self, request: pb.StartRewrapRequest, context: Context
    ) -> pb.StartRewrapResponse:
        return pb.StartRewrapResponse(job=job_to_proto(await self._service.start_rewrap()))

    async def GetRewrapJob(
        self, request: pb.GetRewrapJobRequest, context: Context
    ) -> pb.GetRewrapJobResponse:
        return pb.GetRewrapJobResponse(job=job_to_proto(await self._service.job(request.job_id)))

    async def CancelRewrap(
        self, request: pb.CancelRewrapRequest, context: Context
    ) -> pb.CancelRewrapResponse:
        return pb.CancelRewrapResponse(job=job_to_proto(await self._service.cancel(request.job_id)))

    async def RetireKeyVersion(
        self, request: pb.RetireKeyVersionRequest, context: Context
    ) -> pb.RetireKeyVersionResponse:
        target = request.WhichOneof("target")
        if target == "root_key_id":
            await self._service.retire_root_key(request.root_key_id)
        elif target == "data_key":
            await self._service.retire_data_key(
                request.data_key.organization_id, request.data_key.version
            )
        else:
            raise InvalidArgument("target", "name a root_key_id or a data_key to retire")
        return pb.RetireKeyVersionResponse()

    async def RepairCredentialKeys(
        self, request: pb.RepairCredentialKeysRequest, context: Context
    ) -> pb.RepairCredentialKeysResponse:
        report = await self._service.repair_credential_keys(request.organization_id)
        return pb.RepairCredentialKeysResponse(
            checked=report.checked,
            repaired=[
                pb.CredentialKeyRepair(
                    credential_id=str(r.credential_id),
                    recorded_key_version=r.recorded_key_version,
                    sealed_key_version=r.sealed_key_version,
                )
                for r in report.repaired
            ],
            unrecoverable_credential_ids=[str(i) for i in report.unrecoverable],
        )

    async def SetOrganizationKeyProvider(
        self, request: pb.SetOrganizationKeyProviderRequest, context: Context
    ) -> pb.SetOrganizationKeyProviderResponse:
        provider, migration = await self._organization_keys.set_provider(
            request.organization_id,
            request.address,
            request.key_name,
            request.mount,
            request.authentication.token,
        )
        return pb.SetOrganizationKeyProviderResponse(
            provider=organization_key_provider_to_proto(provider),
            migration=organization_key_migration_to_proto(migration),
        )

    async def GetOrganizationKeyProvider(
        self, request: pb.GetOrganizationKeyProviderRequest, context: Context
    ) -> pb.GetOrganizationKeyProviderResponse:
        status = await self._organization_keys.get_provider(request.organization_id)
        response = pb.GetOrganizationKeyProviderResponse()
        if status.provider is not None:
            response.provider.CopyFrom(organization_key_provider_to_proto(status.provider))
        if status.latest_migration is not None:
            response.latest_migration.CopyFrom(
                organization_key_migration_to_proto(status.latest_migration)
            )
        return response

    async def ClearOrganizationKeyProvider(
        self, request: pb.ClearOrganizationKeyProviderRequest, context: Context
    ) -> pb.ClearOrganizationKeyProviderResponse:
        migration = await self._organization_keys.clear_provider(request.organization_id)
        return pb.ClearOrganizationKeyProviderResponse(
            migration=organization_key_migration_to_proto(migration)
        )
