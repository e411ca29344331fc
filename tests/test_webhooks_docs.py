"""docs/events.md's consumer-side verification snippet, run against real deliveries: it
accepts what the vault signs (also with two signatures during a rotation) and refuses a
changed body, a wrong secret and a stale timestamp."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.config import WebhookSettings
from singura_vault.db.pool import Database
from singura_vault.proto.singura.vault.v1 import webhooks_pb2 as pb
from singura_vault.service.access import AccessService
from singura_vault.service.webhook_worker import WebhookWorker
from tests.conftest import Vault, start_vault, stop_vault
from tests.test_webhooks import create, new_connection, new_org, stub
from tests.webhook_receiver import Receiver

DOC = Path(__file__).resolve().parents[1] / "docs" / "events.md"


def snippet(marker: str, language: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    found = re.search(rf"<!-- {marker} -->\n```{language}\n(.*?)```", text, re.DOTALL)
    assert found, f"docs/events.md has no {marker} block"
    return found.group(1)


@pytest.fixture
def verify_webhook() -> Callable[[str, dict[str, str], bytes], Any]:
    namespace: dict[str, Any] = {}
    exec(compile(snippet("webhook-verify-python", "python"), str(DOC), "exec"), namespace)  # noqa: S102 - the docs' own snippet
    function: Callable[[str, dict[str, str], bytes], Any] = namespace["verify_webhook"]
    return function


@pytest.fixture
async def vault(
    db: Database, key_manager: keys.KeyManager, access_service: AccessService
) -> AsyncIterator[Vault]:
    running = await start_vault(Components(db, key_manager=key_manager, access=access_service))
    yield running
    await stop_vault(running)


@pytest.fixture
async def worker(vault: Vault, key_manager: keys.KeyManager) -> AsyncIterator[WebhookWorker]:
    running = Components(
        vault.db, key_manager=key_manager, webhooks=WebhookSettings()
    ).webhook_worker_with()
    yield running
    await running.aclose()


async def test_the_documented_python_verifier_accepts_real_deliveries(
    vault: Vault,
    worker: WebhookWorker,
    verify_webhook: Callable[[str, dict[str, str], bytes], Any],
) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        org = await new_org(vault)
        created = await create(vault, org, receiver.url)
        await new_connection(vault, org)
        await worker.run_once()
        [message] = receiver.received
        event = verify_webhook(created.signing_secret, message.headers, message.body)
        assert event["type"] == "connection.created"
        assert event["data"]["organization_id"] == org

        with pytest.raises(ValueError, match="signature"):
            verify_webhook(created.signing_secret, message.headers, message.body + b" ")
        other = await create(vault, org, receiver.url + "&other=1")
        with pytest.raises(ValueError, match="signature"):
            verify_webhook(other.signing_secret, message.headers, message.body)
        stale = {
            **message.headers,
            "webhook-timestamp": str(int(message.headers["webhook-timestamp"]) - 600),
        }
        with pytest.raises(ValueError, match="tolerance"):
            verify_webhook(created.signing_secret, stale, message.body)

        rotated = await stub(vault).RotateWebhookSecret(
            pb.RotateWebhookSecretRequest(organization_id=org, endpoint_id=created.endpoint.id)
        )
        await stub(vault).SendTestEvent(
            pb.SendTestEventRequest(organization_id=org, endpoint_id=created.endpoint.id)
        )
        await worker.run_once()
        test_message = receiver.received[-1]
        for secret in (created.signing_secret, rotated.signing_secret):
            assert verify_webhook(secret, test_message.headers, test_message.body)["type"] == (
                "webhook.test"
            )
    finally:
        await receiver.stop()


def test_the_typescript_verifier_is_documented() -> None:
    """The TypeScript snippet is there, with the same checks (run at integration)."""
    code = snippet("webhook-verify-typescript", "typescript")
    for needed in ("timingSafeEqual", "whsec_", "webhook-signature", "TOLERANCE_S"):
        assert needed in code
