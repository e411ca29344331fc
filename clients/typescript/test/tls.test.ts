/**
 * The client over TLS against a real vault that requires mutual TLS:
 * tests/integration/test_typescript_client.py serves one on SINGURA_TLS_ADDRESS with a test CA
 * (SINGURA_TLS_CA) and hands over a client certificate it signed
 * (SINGURA_TLS_CLIENT_CERT, SINGURA_TLS_CLIENT_KEY); the API key is SINGURA_API_KEY.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { Plan, VaultError, createVaultClient } from "../src/index.js";
import { env, failure } from "./helpers.js";

const address = env("SINGURA_TLS_ADDRESS");
const apiKey = env("SINGURA_API_KEY");
const ca = readFileSync(env("SINGURA_TLS_CA"));
const cert = readFileSync(env("SINGURA_TLS_CLIENT_CERT"));
const key = readFileSync(env("SINGURA_TLS_CLIENT_KEY"));

describe("TLS", () => {
  it("talks to the vault over mutual TLS with the CA and a client certificate", async () => {
    const vault = createVaultClient({ address, apiKey, tls: { ca, cert, key } });
    try {
      const tag = randomBytes(6).toString("hex");
      const org = await vault.organizations.create({
        name: `TLS ${tag}`,
        slug: `tls-${tag}`,
        domain: `tls-${tag}.example.com`,
        plan: Plan.FREE,
      });
      assert.equal((await vault.organizations.get(org.id)).slug, `tls-${tag}`);
    } finally {
      vault.close();
    }
  });

  it("gets no answer without a client certificate", async () => {
    const vault = createVaultClient({ address, apiKey, tls: { ca }, retries: 0 });
    try {
      const error = await failure(vault.organizations.list());
      // The server refuses the handshake; connect-node reports the dropped
      // connection as UNAVAILABLE or (TLS 1.3: after the client's side finished) CANCELLED.
      assert.ok(["UNAVAILABLE", "CANCELLED"].includes(error.code), `code ${error.code}`);
      assert.equal(error.reason, "", "the vault never got to answer");
    } finally {
      vault.close();
    }
  });

  it("does not trust the vault's certificate without its CA", async () => {
    const vault = createVaultClient({ address, apiKey, tls: { cert, key }, retries: 0 });
    try {
      const error = await failure(vault.organizations.list());
      assert.notEqual(error.code, "UNAUTHENTICATED", "the call reached the vault");
      assert.equal(error.reason, "", "the vault never got to answer");
      assert.match(String(error.connectError.cause ?? error.message), /certificate/i);
    } finally {
      vault.close();
    }
  });

  it("gets no answer in plaintext from a TLS port", async () => {
    const vault = createVaultClient({ address, apiKey, retries: 0, timeoutMs: 5_000 });
    try {
      const error = await failure(vault.organizations.list());
      assert.equal(error.reason, "", "the vault never got to answer");
    } finally {
      vault.close();
    }
  });
});
