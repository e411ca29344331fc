/**
 * The call policy on the wire, without a vault: retries of UNAVAILABLE (a port
 * nobody listens on) for idempotent calls only, and the deadline (a server that
 * accepts the connection and never answers). An extra interceptor counts the
 * attempts each call made.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import * as net from "node:net";
import { after, before, describe, it } from "node:test";

import type { Interceptor } from "@connectrpc/connect";

import { CredentialType, VaultError, createVaultClient, transportTarget } from "../src/index.js";
import { failure } from "./helpers.js";

const FAKE_KEY = "svk_0000000000000000_not-a-real-key-for-policy-tests-only";

/** A loopback port that was free a moment ago and has no listener now. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve, reject) => server.close((e) => (e ? reject(e) : resolve())));
  return port;
}

function counting(): { interceptor: Interceptor; attempts: () => number } {
  let attempts = 0;
  return {
    interceptor: (next) => async (req) => {
      attempts += 1;
      assert.equal(req.header.get("authorization"), `Bearer ${FAKE_KEY}`, "the key is on every attempt");
      return next(req);
    },
    attempts: () => attempts,
  };
}

describe("retries of UNAVAILABLE", () => {
  let port = 0;
  before(async () => {
    port = await closedPort();
  });

  function client(retries: number) {
    const counter = counting();
    const vault = createVaultClient({
      address: `127.0.0.1:${port}`,
      apiKey: FAKE_KEY,
      retries,
      backoffMs: 1,
      interceptors: [counter.interceptor],
    });
    return { vault, attempts: counter.attempts };
  }

  const store = {
    organizationId: randomUUID(),
    connectionId: randomUUID(),
    type: CredentialType.API_KEY,
    value: "not-a-secret",
  };

  it("retries a get `retries` times, then throws UNAVAILABLE", async () => {
    const { vault, attempts } = client(2);
    const error = await failure(vault.organizations.get(randomUUID()));
    assert.equal(error.code, "UNAVAILABLE");
    assert.equal(error.procedure, "singura.vault.v1.OrganizationService/GetOrganization");
    assert.equal(attempts(), 3);
    vault.close();
  });

  it("retries a reveal, a list and an export", async () => {
    const { vault, attempts } = client(1);
    await failure(vault.credentials.reveal({ ...store, version: 0 }));
    await failure(vault.organizations.list());
    assert.equal(attempts(), 4);
    const exported = async () => {
      for await (const _ of vault.audit.export({ organizationId: store.organizationId })) {
        assert.fail("an event from a port nobody listens on");
      }
    };
    const error = await failure(exported());
    assert.equal(error.code, "UNAVAILABLE");
    assert.equal(error.procedure, "singura.vault.v1.AuditService/ExportAuditEvents");
    assert.equal(attempts(), 6);
    vault.close();
  });

  it("never retries a store without a requestId", async () => {
    const { vault, attempts } = client(3);
    const error = await failure(vault.credentials.store(store));
    assert.equal(error.code, "UNAVAILABLE");
    assert.equal(attempts(), 1);
    vault.close();
  });

  it("retries a store and a create that carry a requestId", async () => {
    const { vault, attempts } = client(2);
    await failure(vault.credentials.store({ ...store, requestId: randomUUID() }));
    assert.equal(attempts(), 3);
    await failure(
      vault.raw.organizations.createOrganization({ organization: { name: "x" }, requestId: randomUUID() }),
    );
    assert.equal(attempts(), 6);
    await failure(vault.raw.organizations.createOrganization({ organization: { name: "x" } }));
    assert.equal(attempts(), 7);
    vault.close();
  });

  it("never retries an update or a delete", async () => {
    const { vault, attempts } = client(3);
    await failure(vault.organizations.update({ id: randomUUID(), name: "x" }, ["name"]));
    await failure(vault.connections.delete(randomUUID(), randomUUID()));
    assert.equal(attempts(), 2);
    vault.close();
  });
});

describe("the deadline", () => {
  // Accepts TCP connections and never says a word: no HTTP/2 settings, no answer.
  const sockets = new Set<net.Socket>();
  const silent = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  let port = 0;
  before(async () => {
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    port = (silent.address() as net.AddressInfo).port;
  });
  after(() => {
    for (const socket of sockets) socket.destroy();
    silent.close();
  });

  it("ends a call to a silent server with DEADLINE_EXCEEDED after timeoutMs, unretried", async () => {
    const counter = counting();
    const vault = createVaultClient({
      address: `127.0.0.1:${port}`,
      apiKey: FAKE_KEY,
      timeoutMs: 300,
      retries: 2,
      interceptors: [counter.interceptor],
    });
    const started = Date.now();
    const error = await failure(vault.organizations.get(randomUUID()));
    const elapsed = Date.now() - started;
    assert.equal(error.code, "DEADLINE_EXCEEDED");
    assert.ok(elapsed >= 250, `the call ended after ${elapsed} ms, before its deadline`);
    assert.ok(elapsed < 5_000, `the call took ${elapsed} ms for a 300 ms deadline`);
    assert.equal(counter.attempts(), 1);
    vault.close();
  });

  it("lets one call override the default deadline", async () => {
    const vault = createVaultClient({ address: `127.0.0.1:${port}`, apiKey: FAKE_KEY, timeoutMs: 60_000 });
    const started = Date.now();
    const error = await failure(vault.organizations.list({}, { timeoutMs: 200 }));
    assert.equal(error.code, "DEADLINE_EXCEEDED");
    assert.ok(Date.now() - started < 5_000, "the per-call timeoutMs was not used");
    vault.close();
  });
});

describe("transport target", () => {
  it("is h2c for host:port and https with tls", () => {
    assert.equal(transportTarget("127.0.0.1:50051", false).baseUrl, "http://127.0.0.1:50051");
    assert.equal(transportTarget("127.0.0.1:50051", undefined).baseUrl, "http://127.0.0.1:50051");
    const secure = transportTarget("vault.internal:443", { ca: "PEM", serverName: "vault" });
    assert.equal(secure.baseUrl, "https://vault.internal:443");
    assert.equal(secure.nodeOptions.ca, "PEM");
    assert.equal(secure.nodeOptions.servername, "vault");
    assert.equal(transportTarget("https://vault.internal", true).baseUrl, "https://vault.internal");
    assert.throws(() => transportTarget("http://vault.internal", true), TypeError);
  });

  it("refuses an empty API key", () => {
    assert.throws(() => createVaultClient({ address: "127.0.0.1:1", apiKey: "" }), TypeError);
  });
});
