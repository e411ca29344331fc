"""What is compared: the data set's shape, the per-call timeout, and the rows of the
table as pairs of a vault operation and the OpenBao operation it is measured against."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb

CONNECTIONS = 60
TYPES = {
    "access_token": crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
    "refresh_token": crpb.CREDENTIAL_TYPE_REFRESH_TOKEN,
    "api_key": crpb.CREDENTIAL_TYPE_API_KEY,
}
BATCH_RPC = "BatchRevealCredentials"
CALL_TIMEOUT_S = 30.0
KV_MOUNT = "kv"
TOKEN_LIFETIME = timedelta(days=1)
"""The expiry the data set gives access tokens: far beyond GetAccessToken's default
5-minute margin, so the token row never refreshes."""

Slot = dict[str, Any]
"""One credential of the data set: connection_id, type, credential_id and KV path."""


@dataclass(frozen=True)
class Pair:
    """One row of the table: a vault operation and the OpenBao operation it is compared to."""

    key: str
    vault_label: str
    vault_op: str
    bao_label: str
    bao_op: str
    audited: bool = False
    floor: bool = False
    """Whether ``--floor`` measures this row's vault operation on the floor server too."""


PAIRS = {
    p.key: p
    for p in (
        Pair(
            "write",
            "StoreCredential (new version)",
            "store",
            "KV v2 write (new path)",
            "write",
            floor=True,
        ),
        Pair("reveal", "RevealCredential", "reveal", "KV v2 read", "read", floor=True),
        Pair("get", "GetCredential (by id)", "get", "KV v2 read", "read", floor=True),
        Pair(
            "batch",
            f"{BATCH_RPC} (per credential)",
            "batch",
            "KV v2 read (per credential)",
            "read",
        ),
        Pair("token", "GetAccessToken (fresh token)", "token", "KV v2 read", "read"),
        Pair(
            "audited",
            "RevealCredential (audited)",
            "reveal",
            "KV v2 read, file audit on",
            "read",
            audited=True,
        ),
    )
}
