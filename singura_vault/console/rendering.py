"""How the console's pages are rendered: the Jinja2 environment (autoescaping, strict
undefined) with its filters for protobuf values, the options of a <select> over an enum,
and the HTTP status of a page that shows a vault error.

Pure presentation: nothing here calls the vault or reads a request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import jinja2
from google.protobuf import json_format

from singura_vault.console import overview
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import audit_pb2
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import keys_pb2 as kpb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb

HERE = Path(__file__).resolve().parent
# gRPC codes and the HTTP status of the page that shows them.
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 409,
    "ABORTED": 409,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
}


def _enum_filter(values: Iterable[tuple[str, int]], prefix: str) -> Callable[[int], str]:
    names = dict((number, name) for name, number in values)

    def label(value: int) -> str:
        return overview.enum_label(names.get(value, str(value)), prefix)

    return label


def options(values: Iterable[tuple[str, int]], prefix: str) -> list[tuple[str, str]]:
    """(query value, label) for a <select>, without the UNSPECIFIED zero."""
    return [
        (name.removeprefix(prefix).lower(), overview.enum_label(name, prefix))
        for name, number in values
        if number != 0
    ]


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=overview.when,
        iso=overview.iso,
        connection_status=_enum_filter(cpb.ConnectionStatus.items(), "CONNECTION_STATUS_"),
        platform=_enum_filter(cpb.Platform.items(), "PLATFORM_"),
        credential_type=_enum_filter(crpb.CredentialType.items(), "CREDENTIAL_TYPE_"),
        credential_state=_enum_filter(crpb.CredentialState.items(), "CREDENTIAL_STATE_"),
        outcome=_enum_filter(audit_pb2.AuditOutcome.items(), "AUDIT_OUTCOME_"),
        rewrap_state=_enum_filter(kpb.RewrapJobState.items(), "REWRAP_JOB_STATE_"),
        role=_enum_filter(apb.ApiKeyRole.items(), "API_KEY_ROLE_"),
        plan=_enum_filter(opb.Plan.items(), "PLAN_"),
        struct_json=lambda s: json.dumps(json_format.MessageToDict(s), indent=2, sort_keys=True),
    )
    return env
