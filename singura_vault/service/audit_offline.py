"""Verify an exported audit trail against its signed checkpoints, with no database.

Inputs are what ``singura-vault audit export --format jsonl --checkpoints FILE``
writes (one JSON object per line, each an ``AuditEvent`` / ``AuditCheckpoint`` in
protobuf's JSON mapping with proto field names) and the audit signing key's public
key (PEM) -- or, for a trail signed across a key rotation, each key's public key.
The keys are parsed before anything else: a file that is not an Ed25519 public key is
a :class:`~singura_vault.keys.KeyConfigError` saying what it is (exit 2 in the CLI),
never a key id that fails to match. The checks, in order, report the first thing
that does not hold:

1. the events are one chain, in order, each linked to the one before, and each
   event's hash is SHA-256(previous hash || canonical encoding) -- the encoding the
   database hashes (``singura.audit_canonical``: a JSON array in PostgreSQL's
   ``jsonb`` text form), rebuilt here from the exported fields;
2. every checkpoint was signed by one of the given keys and its Ed25519 signature
   verifies under it, and each names its predecessor's signature (so none was
   removed between two); where the key changes (a rotation), the new key's first
   checkpoint also names the previous key's id in its signed message;
3. every checkpoint within the export's range matches the event at its position
   (a chain re-hashed after the checkpoint no longer does);
4. the export reaches the newest checkpoint (events removed from the end show).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from singura_vault import keys
from singura_vault.service.audit_checkpoints import checkpoint_message, micros

_GENESIS = "00" * 32
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OUTCOME_PREFIX = "AUDIT_OUTCOME_"


@dataclass(frozen=True)
class KeyChange:
    """Where the checkpoints' signing key changed: a rotation."""

    sequence: int
    previous_key_id: str
    key_id: str


@dataclass(frozen=True)
class OfflineReport:
    ok: bool
    events: int
    checkpoints: int
    first_sequence: int
    last_sequence: int
    newest_checkpoint_sequence: int
    newest_checkpoint_time: datetime | None
    problem: str = ""
    key_changes: tuple[KeyChange, ...] = ()


class ExportFormatError(ValueError):
    """A line of an export is not what ``audit export`` writes."""


def read_jsonl(lines: Iterable[str], what: str) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ExportFormatError(f"{what}, line {number}: not JSON") from None
        if not isinstance(record, dict):
            raise ExportFormatError(f"{what}, line {number}: not a JSON object")
        records.append(record)
    return records


def read_public_key(data: bytes, where: str) -> keys.AuditPublicKey:
    """Parse a public key file's bytes; KeyConfigError says what else it is."""
    return keys.parse_public_key(data, where)


def verify_offline(
    events: Sequence[Mapping[str, Any]],
    checkpoints: Sequence[Mapping[str, Any]],
    public_keys: str | Sequence[keys.AuditPublicKey],
) -> OfflineReport:
    """Check an exported chain and its checkpoints against the given public keys (or
    one key's PEM text); see the module docstring."""
    if isinstance(public_keys, str):
        public_keys = [keys.parse_public_key(public_keys.encode("utf-8"), "the public key")]
    try:
        return _verify(events, checkpoints, {k.key_id: k for k in public_keys})
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ExportFormatError):
            raise
        raise ExportFormatError(f"a record lacks a field or has a malformed one ({exc})") from None


def _verify(  # noqa: C901 - one check per rule an auditor reads, in order
    events: Sequence[Mapping[str, Any]],
    checkpoints: Sequence[Mapping[str, Any]],
    public_keys: Mapping[str, keys.AuditPublicKey],
) -> OfflineReport:
    by_sequence: dict[int, str] = {}
    chain = {e.get("organization_id", "") for e in events} | {
        c.get("organization_id", "") for c in checkpoints
    }
    first = int(events[0]["sequence"]) if events else 0
    last = first - 1
    previous_hash = None
    report = _Report(len(events), len(checkpoints), first)
    if len(chain) > 1:
        return report.fail(last, "the files hold more than one organization's chain")
    for event in events:
        sequence = int(event["sequence"])
        prev_hash = event.get("prev_hash", "")
        if previous_hash is None:
            if sequence == 1 and prev_hash != _GENESIS:
                return report.fail(last, "the chain's first event does not start from zero")
        elif sequence != last + 1:
            return report.fail(
                last, f"position {last + 1} is missing (the next event is at {sequence})"
            )
        elif prev_hash != previous_hash:
            return report.fail(
                last, f"event at position {sequence} does not link to the one before"
            )
        digest = hashlib.sha256(bytes.fromhex(prev_hash) + canonical(event).encode("utf-8"))
        if digest.hexdigest() != event["hash"]:
            return report.fail(
                last, f"event at position {sequence} (id {event['id']}) does not match its hash"
            )
        by_sequence[sequence] = event["hash"]
        previous_hash = event["hash"]
        last = sequence

    previous_signature: bytes | None = None
    previous_key_id: str | None = None
    newest: tuple[int, datetime] | None = None
    for index, checkpoint in enumerate(checkpoints):
        sequence = int(checkpoint["sequence"])
        signed_at = _timestamp(checkpoint["sign_time"])
        signature = bytes.fromhex(checkpoint["signature"])
        named_previous = checkpoint.get("previous_signature", "")
        previous = bytes.fromhex(named_previous) if named_previous else None
        key_id = str(checkpoint.get("key_id", ""))
        key = public_keys.get(key_id)
        if key is None:
            return report.fail(last, _unknown_key(sequence, key_id, public_keys))
        if not _signed(key, checkpoint, sequence, signed_at, previous, signature, previous_key_id):
            return report.fail(last, f"the checkpoint at position {sequence} has a bad signature")
        if previous_key_id is not None and previous_key_id != key_id:
            report.key_changes.append(KeyChange(sequence, previous_key_id, key_id))
        if index > 0 and previous != previous_signature:
            return report.fail(
                last,
                f"the checkpoint at position {sequence} does not follow the one before it: "
                "a checkpoint between them is missing",
            )
        if index == 0 and previous is not None and first <= 1:
            return report.fail(
                last,
                f"the first checkpoint (position {sequence}) names a predecessor the file "
                "does not hold: earlier checkpoints are missing",
            )
        if first <= sequence <= last and by_sequence[sequence] != checkpoint["hash"]:
            return report.fail(
                last,
                f"the event at position {sequence} does not match the checkpoint signed at "
                f"{signed_at.isoformat()}: the chain was re-hashed after it was signed",
            )
        previous_signature = signature
        previous_key_id = key_id
        newest = (sequence, signed_at)
    report.newest = newest
    if newest is not None and newest[0] > last:
        return report.fail(
            last,
            f"the export ends at position {last}, but the checkpoint signed at "
            f"{newest[1].isoformat()} covers position {newest[0]}: events were removed from "
            "the end (or the export was cut short)",
        )
    return report.succeed(last)


def _unknown_key(sequence: int, key_id: str, public_keys: Mapping[str, Any]) -> str:
    given = ", ".join(public_keys)
    if len(public_keys) == 1:
        return (
            f"the checkpoint at position {sequence} was signed by key {key_id}, not by the "
            f"given public key ({given}); if the vault's signing key was rotated, give each "
            "key's public key (--public-key once per key)"
        )
    return (
        f"the checkpoint at position {sequence} was signed by key {key_id}, which is none of "
        f"the given public keys ({given})"
    )


def _signed(
    key: keys.AuditPublicKey,
    checkpoint: Mapping[str, Any],
    sequence: int,
    signed_at: datetime,
    previous: bytes | None,
    signature: bytes,
    previous_key_id: str | None,
) -> bool:
    """Whether the checkpoint's signature verifies. Where the key changed, the new key's
    first checkpoint names the previous key (the seventh line of the message); a vault
    from before rotations were recorded changed keys without naming it, which the
    signature still ties to the previous checkpoint through its signature."""

    def message(named_key: str | None) -> bytes:
        return checkpoint_message(
            _organization(checkpoint),
            sequence,
            bytes.fromhex(checkpoint["hash"]),
            micros(signed_at),
            previous,
            named_key,
        )

    if previous_key_id is None or previous_key_id == key.key_id:
        return key.verify(message(None), signature)
    return key.verify(message(previous_key_id), signature) or key.verify(message(None), signature)


@dataclass
class _Report:
    events: int
    checkpoints: int
    first: int
    newest: tuple[int, datetime] | None = None
    key_changes: list[KeyChange] = field(default_factory=list)

    def fail(self, last: int, problem: str) -> OfflineReport:
        return self._result(False, last, problem)

    def succeed(self, last: int) -> OfflineReport:
        return self._result(True, last, "")

    def _result(self, ok: bool, last: int, problem: str) -> OfflineReport:
        return OfflineReport(
            ok,
            self.events,
            self.checkpoints,
            self.first,
            last,
            self.newest[0] if self.newest else 0,
            self.newest[1] if self.newest else None,
            problem,
            tuple(self.key_changes),
        )


def _organization(record: Mapping[str, Any]) -> UUID | None:
    text = record.get("organization_id", "")
    return UUID(text) if text else None


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z")


def _timestamp_micros(text: str) -> int:
    """Microseconds since the epoch of protobuf's JSON form of a Timestamp."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ExportFormatError(f"{text!r} is not a UTC time like 2026-01-31T00:00:00.123456Z")
    whole = datetime.fromisoformat(match[1]).replace(tzinfo=UTC)
    return micros(whole) + int((match[2] or "").ljust(9, "0")) // 1000


def _timestamp(text: str) -> datetime:
    return _EPOCH + timedelta(microseconds=_timestamp_micros(text))


def canonical(event: Mapping[str, Any]) -> str:
    """``singura.audit_canonical(e)``, rebuilt from an exported event."""
    outcome = str(event.get("outcome", "")).removeprefix(_OUTCOME_PREFIX).lower()
    return _jsonb(
        [
            int(event["id"]),
            event.get("organization_id") or None,
            int(event["sequence"]),
            _timestamp_micros(event["occur_time"]),
            event.get("actor", ""),
            event.get("action", ""),
            event.get("resource_type", ""),
            event.get("resource_id") or None,
            event.get("request_id") or None,
            outcome,
            event.get("details", {}),
        ]
    )


def _jsonb(value: Any) -> str:
    """PostgreSQL's jsonb text form: ", " and ": " separators, object keys ordered by
    length and then bytewise, numbers as given (an exported Struct turns integers into
    floats, so whole floats are written as integers again)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 2**53:
            return str(int(value))
        return repr(value)
    if isinstance(value, str):
        return _jsonb_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_jsonb(item) for item in value) + "]"
    if isinstance(value, dict):
        ordered = sorted(value, key=lambda k: (len(k.encode("utf-8")), k.encode("utf-8")))
        return "{" + ", ".join(f"{_jsonb_string(k)}: {_jsonb(value[k])}" for k in ordered) + "}"
    raise ExportFormatError(f"unexpected value of type {type(value).__name__} in an event")


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _jsonb_string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
