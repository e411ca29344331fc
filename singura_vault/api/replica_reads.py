"""Which RPCs may be answered from a replica (DATABASE_REPLICA_URL): the one place
that decides it.

A use case is listed here when its reads are metadata that tolerate
SINGURA_REPLICA_MAX_LAG (a dashboard, a scanner's inventory). Everything else reads
the primary: writes and every statement of a write RPC, reveals (their audit event
is written on the primary before the value leaves), authentication and rate limits,
the audit trail, key administration, OAuth.

The interceptor asks :func:`reads_from_replica` once per call and puts the answer in
the request context (``RequestContext.replica_ok``); the pool's read router
(db/replica.py) then sends that request's statements that record nothing to a
replica that is current and has replayed the caller's consistency token. Neither a
repository nor a query says anything about replicas. docs/high-availability.md lists
the same RPCs; tests/unit/test_docs.py holds the two together.
"""

from __future__ import annotations

from google.protobuf.descriptor import FileDescriptor

from singura_vault.proto.singura.vault.v1 import (
    connections_pb2,
    credentials_pb2,
    organizations_pb2,
)


def _methods(file: FileDescriptor, service: str, *names: str) -> frozenset[str]:
    """The gRPC paths of ``names`` in ``service``; a name the proto lacks fails at import."""
    descriptor = file.services_by_name[service]
    return frozenset(
        f"/{descriptor.full_name}/{descriptor.methods_by_name[name].name}" for name in names
    )


REPLICA_READS: frozenset[str] = (
    _methods(
        organizations_pb2.DESCRIPTOR, "OrganizationService", "GetOrganization", "ListOrganizations"
    )
    | _methods(connections_pb2.DESCRIPTOR, "ConnectionService", "GetConnection", "ListConnections")
    | _methods(
        credentials_pb2.DESCRIPTOR,
        "CredentialService",
        "GetCredential",
        "ListCredentials",
        "ListCredentialVersions",
        "ListExpiringCredentials",
    )
)


def reads_from_replica(method: str) -> bool:
    """Whether the RPC ``method`` (its gRPC path) may read from a replica."""
    return method in REPLICA_READS
