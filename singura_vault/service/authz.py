"""Authorization: may the authenticated caller do this, in this organization?

Every use case asks before it touches data. This is the first of the two
fences; the second is PostgreSQL row-level security, which confines an
organization key's transactions to its own organization whatever the request
says (db/pool.py). Tests swap this class for one that permits everything to
prove the second fence holds alone; there is no runtime switch.

Decisions (docs/threat-model.md):
- an admin key may do everything, in every organization (it is root: keep it offline);
- an organization key acts only in its organization; naming another organization is
  PERMISSION_DENIED before any lookup, so existence is never revealed;
- reads of metadata need reader or writer, changes need writer, RevealCredential
  needs revealer, except of a refresh token, which needs refresh_token_revealer
  (GetAccessToken refreshes inside the vault, so a client rarely needs one);
  organization and API-key administration need an admin key.
"""

from __future__ import annotations

from uuid import UUID

from singura_vault.context import Principal, Role, current_request
from singura_vault.errors import PermissionDenied, Unauthenticated

READ = (Role.READER, Role.WRITER)
WRITE = (Role.WRITER,)
REVEAL = (Role.REVEALER,)
REVEAL_REFRESH_TOKEN = (Role.REFRESH_TOKEN_REVEALER,)
# Either reveal role lets a key call BatchRevealCredentials; each item then needs its own.
REVEAL_ANY = (Role.REVEALER, Role.REFRESH_TOKEN_REVEALER)


class Authorizer:
    """Checks the current request's principal against what a use case needs."""

    def principal(self) -> Principal:
        principal = current_request().principal
        if principal is None:
            raise Unauthenticated("this call needs an API key")
        return principal

    def require_admin(self, action: str) -> Principal:
        principal = self.principal()
        if not principal.is_admin:
            raise PermissionDenied(f"only an admin API key may {action}")
        return principal

    def require(self, organization_id: UUID, roles: tuple[Role, ...], action: str) -> Principal:
        """Admin keys pass; an organization key needs this organization and one of the roles."""
        principal = self.principal()
        if principal.is_admin:
            return principal
        if principal.organization_id != organization_id:
            raise PermissionDenied(
                f"this API key belongs to another organization and cannot {action} in "
                f"organization {organization_id}"
            )
        if roles and not principal.roles.intersection(roles):
            raise missing_role(roles, action)
        return principal


def missing_role(roles: tuple[Role, ...], action: str) -> PermissionDenied:
    """PERMISSION_DENIED naming the role(s) that would allow ``action``, both as the
    database spells them and as the API's ApiKeyRole value (what CreateApiKey takes)."""
    needed = " or ".join(f"{r.value} (API_KEY_ROLE_{r.name})" for r in roles)
    reason = "REFRESH_TOKEN_ROLE_REQUIRED" if roles == REVEAL_REFRESH_TOKEN else None
    return PermissionDenied(f"this API key needs the {needed} role to {action}", reason=reason)
