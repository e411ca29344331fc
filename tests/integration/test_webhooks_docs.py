"""docs/events.md's consumer-side verification snippet, run against real deliveries: it
accepts what the vault signs (also with two signatures during a rotation) and refuses a
changed body, a wrong secret and a stale timestamp."""

from __future__ import annotations

import base64
import json
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
from tests.support.node_tools import ensure_node_modules, run, tool
from tests.support.tenants import new_connection, new_org
from tests.support.vault import Vault, start_vault, stop_vault
from tests.support.webhook_receiver import Receiver
from tests.support.webhooks import create, stub

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "events.md"
TS_DIR = ROOT / "clients" / "typescript"


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
    """The Python verifier snippet from docs/events.md accepts the signatures of real webhook
    deliveries."""
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


# Runs the compiled snippet on the cases the test writes as JSON; prints one line per case.
_TS_HARNESS = """
import { readFileSync } from "node:fs";
import { verifyWebhook } from "./verify.js";

const cases = JSON.parse(readFileSync(process.argv[2]!, "utf8")) as Array<{
  secret: string; headers: Record<string, string>; body: string;
}>;
for (const c of cases) {
  try {
    const event = verifyWebhook(c.secret, c.headers, Buffer.from(c.body, "base64")) as
      { type: string };
    console.log(`ok ${event.type}`);
  } catch (error) {
    console.log(`refused ${(error as Error).message}`);
  }
}
"""

_TS_CONFIG = {
    "compilerOptions": {
        "target": "es2022",
        "lib": ["es2023"],
        "module": "nodenext",
        "moduleResolution": "nodenext",
        "types": ["node"],
        "strict": True,
        "noUncheckedIndexedAccess": True,
        "skipLibCheck": True,
        "outDir": "dist",
    },
    "include": ["*.ts"],
}


async def test_the_documented_typescript_verifier_accepts_real_deliveries(
    vault: Vault, worker: WebhookWorker, tmp_path: Path
) -> None:
    """The TypeScript snippet, compiled with the client's own TypeScript (strict) and run
    by Node on real deliveries: the same verdicts as the Python one."""
    node = tool("node", "runs docs/events.md's TypeScript webhook verifier")
    npm = tool("npm", "installs the TypeScript compiler the snippet is checked with")
    await ensure_node_modules(npm, TS_DIR)
    receiver = Receiver()
    await receiver.start()
    try:
        org = await new_org(vault)
        created = await create(vault, org, receiver.url)
        await new_connection(vault, org)
        await worker.run_once()
        [message] = receiver.received
        other = await create(vault, org, receiver.url + "&other=1")
    finally:
        await receiver.stop()

    def case(secret: str, headers: dict[str, str], body: bytes) -> dict[str, object]:
        return {"secret": secret, "headers": headers, "body": base64.b64encode(body).decode()}

    stale = {
        **message.headers,
        "webhook-timestamp": str(int(message.headers["webhook-timestamp"]) - 600),
    }
    cases = [
        case(created.signing_secret, message.headers, message.body),
        case(created.signing_secret, message.headers, message.body + b" "),
        case(other.signing_secret, message.headers, message.body),
        case(created.signing_secret, stale, message.body),
    ]
    (tmp_path / "verify.ts").write_text(snippet("webhook-verify-typescript", "typescript"))
    (tmp_path / "harness.ts").write_text(_TS_HARNESS)
    config = {**_TS_CONFIG}
    config["compilerOptions"] = {
        **_TS_CONFIG["compilerOptions"],  # type: ignore[dict-item]
        "typeRoots": [str(TS_DIR / "node_modules" / "@types")],
    }
    (tmp_path / "tsconfig.json").write_text(json.dumps(config))
    (tmp_path / "package.json").write_text('{"type": "module"}')
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    tsc = str(TS_DIR / "node_modules" / ".bin" / "tsc")
    code, out, err = await run(tsc, "-p", str(tmp_path), cwd=tmp_path, limit_s=120)
    assert code == 0, f"the documented TypeScript verifier does not compile:\n{out}\n{err}"
    (tmp_path / "dist" / "package.json").write_text('{"type": "module"}')
    code, out, err = await run(
        node,
        str(tmp_path / "dist" / "harness.js"),
        str(tmp_path / "cases.json"),
        cwd=tmp_path,
        limit_s=60,
    )
    assert code == 0, err
    assert out.splitlines() == [
        "ok connection.created",
        "refused no valid signature",
        "refused no valid signature",
        "refused timestamp outside the tolerance (a replay?)",
    ]
