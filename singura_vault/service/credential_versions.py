"""Credential version states (migration 029): why a version may not be revealed, and
why a state change was refused -- the FAILED_PRECONDITION reasons a client switches on.

Pure functions of a credential's row: no I/O, no key material.
"""

from __future__ import annotations

from datetime import datetime

from singura_vault.domain.credentials import Credential, CredentialVersionState, VersionTransition
from singura_vault.errors import FailedPrecondition, VaultError
from singura_vault.repositories.credentials import VersionChange

TRANSITION_ACTIONS = {
    VersionTransition.DISABLE: "disable credential versions",
    VersionTransition.ENABLE: "enable credential versions",
    VersionTransition.DESTROY: "destroy credential versions",
    VersionTransition.CANCEL_DESTROY: "cancel the destruction of credential versions",
}


def _when(at: datetime | None) -> str:
    return f"{at:%Y-%m-%dT%H:%M:%SZ}" if at is not None else "an unknown time"


def _version_metadata(credential: Credential) -> dict[str, str]:
    metadata = {"version": str(credential.version)}
    if credential.destroy_at is not None:
        metadata["destroy_time"] = _when(credential.destroy_at)
    return metadata


def version_unusable(credential: Credential) -> FailedPrecondition | None:
    """Why a version's value may not be revealed (or used by a refresh) for its version
    state, if it may not: FAILED_PRECONDITION, CREDENTIAL_VERSION_DESTROYED or
    CREDENTIAL_VERSION_DISABLED (also while its destruction is scheduled)."""
    which = (
        f"credential {credential.id} (version {credential.version} of connection "
        f"{credential.connection_id}'s {credential.type.value})"
    )
    if credential.version_state is CredentialVersionState.DESTROYED:
        return FailedPrecondition(
            f"{which} was destroyed at {_when(credential.destroy_at)}: its value was erased "
            "for good; store a new version",
            reason="CREDENTIAL_VERSION_DESTROYED",
            metadata=_version_metadata(credential),
        )
    if credential.version_state is CredentialVersionState.DISABLED:
        if credential.destroy_at is not None:
            what = (
                f"is scheduled for destruction at {_when(credential.destroy_at)}; "
                "CancelCredentialDestroy before then keeps it"
            )
        else:
            what = "is disabled; EnableCredentialVersion makes it revealable again"
        return FailedPrecondition(
            f"{which} {what}",
            reason="CREDENTIAL_VERSION_DISABLED",
            metadata=_version_metadata(credential),
        )
    return None


def transition_refused(change: VersionChange, transition: VersionTransition) -> VaultError:
    """FAILED_PRECONDITION for a transition the version's state does not allow, with the
    reason a client switches on."""
    credential = change.credential
    which = (
        f"credential {credential.id} (version {credential.version} of connection "
        f"{credential.connection_id}'s {credential.type.value})"
    )
    metadata = _version_metadata(credential)
    if change.refused == "revoked":
        return FailedPrecondition(
            f"{which} is revoked: its value is gone and its state can no longer change",
            reason="CREDENTIAL_REVOKED",
            metadata=metadata,
        )
    if change.refused == "destroyed":
        return FailedPrecondition(
            f"{which} was destroyed at {_when(credential.destroy_at)}: it cannot be "
            "enabled, disabled or destroyed again, and its value is gone; store a new version",
            reason="CREDENTIAL_VERSION_DESTROYED",
            metadata=metadata,
        )
    if change.refused == "scheduled":
        return FailedPrecondition(
            f"{which} is already scheduled for destruction at "
            f"{_when(credential.destroy_at)}; call CancelCredentialDestroy first"
            + ("" if transition is VersionTransition.DESTROY else ", then change its state"),
            reason="CREDENTIAL_VERSION_DESTROY_SCHEDULED",
            metadata=metadata,
        )
    return FailedPrecondition(
        f"{which} has no destruction scheduled: there is nothing to cancel",
        reason="CREDENTIAL_VERSION_DESTROY_NOT_SCHEDULED",
        metadata=metadata,
    )
