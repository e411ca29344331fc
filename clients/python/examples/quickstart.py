"""A complete program against the vault of README.md's walk-through.

    SINGURA_API_KEY="$(singura-vault keys admin-key)" python clients/python/examples/quickstart.py

It makes an organization of its own (slug and domain are unique in a vault, so both get a
random suffix and the program runs again and again), a Slack connection, stores a token,
reveals it, lists the connection's credentials and exports the organization's audit trail.
"""

import os
import sys
import uuid
from datetime import UTC, datetime, timedelta

from singura_vault_client import InvalidArgument, Vault, VaultError


def main() -> int:
    api_key = os.environ.get("SINGURA_API_KEY")
    if not api_key:
        print('set SINGURA_API_KEY, e.g. SINGURA_API_KEY="$(singura-vault keys admin-key)"')
        return 2
    address = os.environ.get("SINGURA_ADDRESS", "127.0.0.1:50051")
    suffix = uuid.uuid4().hex[:8]
    token = "xoxb-not-a-real-token"  # noqa: S105 - a fake token, what Slack OAuth would hand you

    # timeout: each call's deadline in seconds, retries included (the default).
    with Vault(address, api_key=api_key, timeout=10.0) as vault:
        try:
            org = vault.organizations.create(
                name="Acme (Python example)",
                slug=f"acme-py-{suffix}",
                domain=f"acme-py-{suffix}.example.com",
                plan="STARTER",  # or "PLAN_STARTER", or types.Plan.PLAN_STARTER
            )
            print(f"created organization {org.slug} ({org.id})")
            conn = vault.connections.create(
                organization_id=org.id,
                platform="SLACK",
                platform_user_id="U024BE7LH",
                platform_workspace_id="T024BE7LD",
                display_name="Acme Slack",
            )
            stored = vault.credentials.store(
                organization_id=org.id,
                connection_id=conn.id,
                type="ACCESS_TOKEN",
                value=token,
                expire_time=datetime.now(UTC) + timedelta(hours=1),
                # request_id: the client makes one, so a retried store is stored once.
            )
            revealed = vault.credentials.reveal(
                organization_id=org.id, connection_id=conn.id, type="ACCESS_TOKEN"
            )
            # revealed.value is a Secret: print(revealed.value) shows Secret('***').
            same = "the value stored" if revealed.value.reveal() == token else "NOT the value"
            print(f"revealed version {revealed.credential.version}: {revealed.value}, {same}")

            page = vault.credentials.list(organization_id=org.id, connection_id=conn.id)
            for credential in page.items:
                mark = "the one stored" if credential.id == stored.id else "another"
                print(f"listed version {credential.version}: {mark}")

            for event in vault.audit.export(organization_id=org.id):
                print(f"{event.sequence} {event.action}")
        except InvalidArgument as error:
            for violation in error.field_violations:
                print(f"{violation.field}: {violation.description}", file=sys.stderr)
            raise
        except VaultError as error:
            # str(error): code, message, reason and the x-request-id to quote.
            print(f"vault call failed: {error}", file=sys.stderr)
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
