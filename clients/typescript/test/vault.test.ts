/**
 * The facade against a real vault: tests/integration/test_typescript_client.py starts one and
 * passes SINGURA_ADDRESS and SINGURA_API_KEY (an admin key), and may pass
 * SINGURA_SECRET_VALUES (comma-separated canaries it scans the vault's logs for).
 *
 * No assertion message here contains a secret value or an API key: values are
 * compared with `===` inside assert.ok, never with assert.equal (which would
 * print both sides when it fails).
 */
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { after, describe, it } from "node:test";

import {
  ConnectionStatus,
  CredentialState,
  CredentialVersionState,
  CredentialType,
  Plan,
  Platform,
  ScopeDrift,
  VaultError,
  createVaultClient,
  type Connection,
  type Organization,
  type VaultClient,
} from "../src/index.js";
import { env, failure } from "./helpers.js";

const address = env("SINGURA_ADDRESS");
const apiKey = env("SINGURA_API_KEY");
const vault = createVaultClient({ address, apiKey });
after(() => vault.close());

function hex(bytes = 6): string {
  return randomBytes(bytes).toString("hex");
}

/** A fresh secret: the pytest test's canaries first (its log scan looks for them). */
const canaries = (process.env.SINGURA_SECRET_VALUES ?? "").split(",").filter((v) => v !== "");
function secretValue(): string {
  return canaries.shift() ?? `canary-ts-${hex(16)}`;
}

/** JSON of anything the client returned (bigint-safe), to search it for a secret. */
function dump(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
}

async function newOrganization(client: VaultClient = vault): Promise<Organization> {
  const tag = hex();
  return client.organizations.create({
    name: `TypeScript ${tag}`,
    slug: `ts-${tag}`,
    domain: `ts-${tag}.example.com`,
    plan: Plan.STARTER,
  });
}

async function newConnection(org: Organization): Promise<Connection> {
  return vault.connections.create({
    organizationId: org.id,
    platform: Platform.SLACK,
    platformUserId: `U${hex(4)}`,
    platformWorkspaceId: `T${hex(4)}`,
    displayName: "Slack workspace",
    permissionsGranted: ["channels:read"],
    metadata: { region: "eu" },
  });
}

describe("the newcomer's path", () => {
  it("creates an organization and a connection, stores a secret and reveals it", async () => {
    const org = await newOrganization();
    assert.match(org.id, /^[0-9a-f-]{36}$/);
    assert.equal(org.plan, Plan.STARTER);
    assert.ok(org.etag.length > 0, "an organization has an etag");
    assert.equal((await vault.organizations.get(org.id)).slug, org.slug);

    const conn = await newConnection(org);
    assert.equal(conn.organizationId, org.id);
    assert.equal(conn.status, ConnectionStatus.ACTIVE);
    assert.deepEqual(conn.metadata, { region: "eu" });
    const listed = await vault.connections.list(org.id, { platform: Platform.SLACK });
    assert.deepEqual(
      listed.items.map((c) => c.id),
      [conn.id],
    );
    // Made by hand, it requested no scopes: it never drifts.
    const drifted = await vault.connections.list(org.id, { scopeDrift: ScopeDrift.ANY });
    assert.deepEqual(drifted.items, []);

    const secret = secretValue();
    assert.ok(secret.startsWith("canary-ts-"), "the stored value is a canary");
    const stored = await vault.credentials.store({
      organizationId: org.id,
      connectionId: conn.id,
      type: CredentialType.API_KEY,
      value: secret,
      expireTime: new Date(Date.now() + 3_600_000),
    });
    assert.equal(stored.version, 1);
    assert.equal(stored.state, CredentialState.ACTIVE);
    assert.ok(stored.expireTime !== undefined, "the expiry was sent");
    assert.ok(!dump(stored).includes(secret), "StoreCredential returned the secret");

    const revealed = await vault.credentials.reveal({
      organizationId: org.id,
      connectionId: conn.id,
      type: CredentialType.API_KEY,
    });
    assert.equal(revealed.credential.id, stored.id);
    assert.ok(revealed.value === secret, "the revealed value is not the stored one");

    const versions = await vault.credentials.list({ organizationId: org.id, connectionId: conn.id });
    assert.deepEqual(
      versions.items.map((c) => c.id),
      [stored.id],
    );
    assert.ok(!dump(versions).includes(secret), "ListCredentials returned the secret");
  });

  it("stores once per requestId: a retried store returns the first credential", async () => {
    const org = await newOrganization();
    const conn = await newConnection(org);
    const secret = secretValue();
    const input = {
      organizationId: org.id,
      connectionId: conn.id,
      type: CredentialType.ACCESS_TOKEN,
      value: secret,
      requestId: randomUUID(),
    };
    const first = await vault.credentials.store(input);
    const again = await vault.credentials.store(input);
    assert.equal(again.id, first.id);
    assert.equal(again.version, 1);
  });

  it("updates and deletes with etags", async () => {
    const org = await newOrganization();
    const renamed = await vault.organizations.update({ id: org.id, name: "Renamed" }, ["name"], org.etag);
    assert.equal(renamed.name, "Renamed");
    assert.notEqual(renamed.etag, org.etag);

    const conn = await newConnection(org);
    const updated = await vault.connections.update(
      { organizationId: org.id, id: conn.id, displayName: "Renamed workspace" },
      ["display_name"],
      conn.etag,
    );
    assert.equal(updated.displayName, "Renamed workspace");
    assert.equal(updated.platformUserId, conn.platformUserId, "fields outside the mask are kept");

    await vault.connections.delete(org.id, conn.id, { etag: updated.etag });
    const deleted = await vault.connections.get(org.id, conn.id);
    assert.ok(deleted.deleteTime, "a deleted connection stays readable, with its delete time");
    const listed = await vault.connections.list(org.id);
    assert.ok(!listed.items.some((c) => c.id === conn.id), "left out of a list");
    const withDeleted = await vault.connections.list(org.id, { showDeleted: true });
    assert.ok(withDeleted.items.some((c) => c.id === conn.id), "listed when asked");
    const restored = await vault.connections.undelete(org.id, conn.id);
    assert.equal(restored.deleteTime, undefined);
    await vault.connections.delete(org.id, conn.id, { force: true });
    assert.equal((await failure(vault.connections.get(org.id, conn.id))).code, "NOT_FOUND");
    await vault.organizations.delete(org.id, renamed.etag);
    const gone = await failure(vault.organizations.get(org.id));
    assert.equal(gone.code, "NOT_FOUND");
    assert.equal(gone.reason, "NOT_FOUND");
  });
});

describe("listing", () => {
  it("pages through organizations with pageSize and pageToken", async () => {
    const created = new Set<string>();
    for (let i = 0; i < 5; i++) {
      created.add((await newOrganization()).id);
    }
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await vault.organizations.list({ pageSize: 2, pageToken });
      assert.ok(page.items.length <= 2, `a page of ${page.items.length} organizations for pageSize 2`);
      seen.push(...page.items.map((o) => o.id));
      pageToken = page.nextPageToken;
      pages += 1;
      assert.ok(pages < 1000, "the pages do not end");
    } while (pageToken !== "");
    assert.ok(pages >= 3, `5 organizations in pages of 2 came in ${pages} pages`);
    assert.equal(new Set(seen).size, seen.length, "an organization appeared on two pages");
    for (const id of created) {
      assert.ok(seen.includes(id), `organization ${id} is on no page`);
    }

    const all: string[] = [];
    for await (const org of vault.organizations.listAll({ pageSize: 2 })) {
      all.push(org.id);
    }
    assert.deepEqual(all, seen);
  });
});

describe("the audit trail", () => {
  it("audit.export async-iterates the events, a credential.revealed among them", async () => {
    const org = await newOrganization();
    const conn = await newConnection(org);
    const secret = secretValue();
    const stored = await vault.credentials.store({
      organizationId: org.id,
      connectionId: conn.id,
      type: CredentialType.REFRESH_TOKEN,
      value: secret,
    });
    await vault.credentials.reveal({
      organizationId: org.id,
      connectionId: conn.id,
      type: CredentialType.REFRESH_TOKEN,
      version: 1,
    });

    const events = [];
    for await (const event of vault.audit.export({ organizationId: org.id })) {
      events.push(event);
    }
    const actions = events.map((e) => e.action);
    assert.ok(actions.includes("organization.created"), `actions: ${actions.join(", ")}`);
    assert.ok(actions.includes("connection.created"), `actions: ${actions.join(", ")}`);
    const reveal = events.find((e) => e.action === "credential.revealed");
    assert.ok(reveal, `no credential.revealed event among: ${actions.join(", ")}`);
    assert.equal(reveal.resourceId, stored.id);
    assert.equal(reveal.organizationId, org.id);
    for (let i = 1; i < events.length; i++) {
      assert.ok(events[i - 1]!.sequence < events[i]!.sequence, "the export is not oldest first");
      assert.equal(events[i]!.prevHash, events[i - 1]!.hash, "the events do not chain");
    }
    assert.ok(!dump(events).includes(secret), "the audit trail holds the secret");

    const onlyReveals = [];
    for await (const event of vault.audit.export({
      organizationId: org.id,
      filter: { action: "credential.revealed", startTime: new Date(Date.now() - 3_600_000) },
    })) {
      onlyReveals.push(event.id);
    }
    assert.deepEqual(onlyReveals, [reveal.id]);
  });
});

describe("events", () => {
  it("lists, filters and watches an organization's events; a check-and-set store", async () => {
    const org = await newOrganization();
    const conn = await newConnection(org);
    const store = (expectedVersion: number) =>
      vault.credentials.store({
        organizationId: org.id,
        connectionId: conn.id,
        type: CredentialType.API_KEY,
        value: secretValue(),
        expectedVersion,
      });
    const first = await store(0);
    const stale = await failure(store(0));
    assert.equal(stale.reason, "CREDENTIAL_VERSION_MISMATCH");

    const page = await vault.events.list({ organizationId: org.id });
    assert.deepEqual(
      page.events.map((e) => e.type),
      ["connection.created", "credential.stored"],
    );
    assert.equal(page.events[1]!.credentialId, first.id);
    assert.equal(page.nextAfter, 2n);
    const stored = await vault.events.list({ organizationId: org.id, types: ["credential.stored"] });
    assert.deepEqual(stored.events.map((e) => e.cursor), [2n]);

    const watched = vault.events.watch({ organizationId: org.id, after: 1 })[Symbol.asyncIterator]();
    const replayed = await watched.next();
    assert.equal(replayed.value?.cursor, 2n);
    const second = await store(1);
    const live = await watched.next();
    assert.equal(live.value?.cursor, 3n);
    assert.equal(live.value?.credentialId, second.id);
    await watched.return?.();
  });
});

describe("credential versions and customer-managed keys", () => {
  it("disables, enables, schedules and cancels the destruction of a version", async () => {
    const org = await newOrganization();
    const conn = await newConnection(org);
    const slot = { organizationId: org.id, connectionId: conn.id, type: CredentialType.API_KEY };
    const firstValue = secretValue();
    await vault.credentials.store({ ...slot, value: firstValue });
    await vault.credentials.store({ ...slot, value: secretValue() });

    const disabled = await vault.credentials.disableVersion({ ...slot, version: 2 });
    assert.equal(disabled.versionState, CredentialVersionState.DISABLED);
    assert.ok((await vault.credentials.reveal(slot)).value === firstValue, "the current version skips it");
    const refused = await failure(vault.credentials.reveal({ ...slot, version: 2 }));
    assert.equal(refused.reason, "CREDENTIAL_VERSION_DISABLED");
    const enabled = await vault.credentials.enableVersion({ ...slot, version: 2 });
    assert.equal(enabled.versionState, CredentialVersionState.ENABLED);

    const scheduled = await vault.credentials.destroyVersion({ ...slot, version: 1 });
    assert.ok(scheduled.destroyTime, "the erasure is scheduled, not done");
    const cancelled = await vault.credentials.cancelDestroy({ ...slot, version: 1 });
    assert.equal(cancelled.destroyTime, undefined);
    assert.ok((await vault.credentials.reveal({ ...slot, version: 1 })).value === firstValue, "revealable");
  });

  it("reads an organization's key provider; clearing none is NOT_FOUND", async () => {
    const org = await newOrganization();
    const status = await vault.keys.getOrganizationKeyProvider(org.id);
    assert.equal(status.provider, undefined, "the global root key wraps its data keys");
    const cleared = await failure(vault.keys.clearOrganizationKeyProvider(org.id));
    assert.equal(cleared.code, "NOT_FOUND");
  });
});

describe("errors are VaultErrors with the server's details", () => {
  it("a bad slug is INVALID_ARGUMENT with a field violation for organization.slug", async () => {
    const error = await failure(
      vault.organizations.create({
        name: "Bad slug",
        slug: "Not A Slug!",
        domain: `bad-${hex()}.example.com`,
        plan: Plan.FREE,
      }),
    );
    assert.equal(error.code, "INVALID_ARGUMENT");
    assert.equal(error.reason, "INVALID_ARGUMENT");
    assert.equal(error.domain, "singura.vault");
    assert.equal(error.metadata.field, "organization.slug");
    assert.deepEqual(
      error.fieldViolations.map((v) => v.field),
      ["organization.slug"],
    );
    assert.ok(error.fieldViolations[0]!.description.length > 0, "the violation says why");
    assert.ok(error.message.startsWith("organization.slug"), error.message);
    assert.ok(error.requestId, "the error names its request id");
    assert.equal(error.procedure, "singura.vault.v1.OrganizationService/CreateOrganization");
  });

  it("a wrong API key is UNAUTHENTICATED with reason API_KEY_INVALID", async () => {
    const wrongKey = `svk_${hex(8)}_${randomBytes(32).toString("base64url")}`;
    const stranger = createVaultClient({ address, apiKey: wrongKey });
    try {
      const error = await failure(stranger.organizations.list());
      assert.equal(error.code, "UNAUTHENTICATED");
      assert.equal(error.reason, "API_KEY_INVALID");
      assert.equal(error.domain, "singura.vault");
      assert.ok(error.requestId, "the error names its request id");
      assert.ok(!error.message.includes(wrongKey), "the error message holds the key");
    } finally {
      stranger.close();
    }
  });

  it("an update with a stale etag is ABORTED with reason STALE_ETAG", async () => {
    const org = await newOrganization();
    await vault.organizations.update({ id: org.id, name: "First" }, ["name"], org.etag);
    const error = await failure(
      vault.organizations.update({ id: org.id, name: "Second" }, ["name"], org.etag),
    );
    assert.equal(error.code, "ABORTED");
    assert.equal(error.reason, "STALE_ETAG");
    assert.deepEqual(
      error.preconditionViolations.map((v) => v.type),
      ["STALE_ETAG"],
    );
    assert.ok(error.requestId, "the error names its request id");
    assert.equal((await vault.organizations.get(org.id)).name, "First", "the stale update changed nothing");
  });

  it("the requestId of an error is the one the call sent", async () => {
    const requestId = randomUUID();
    const error = await failure(
      vault.organizations.get(randomUUID(), { headers: { "x-request-id": requestId } }),
    );
    assert.equal(error.code, "NOT_FOUND");
    assert.equal(error.requestId, requestId);
  });
});
