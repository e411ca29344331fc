/**
 * VaultError from a ConnectError carrying google.rpc details, without a vault: the
 * details the vault fixture never sends (it runs without a rate limit) are built
 * here as connect would receive them.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";

import {
  ErrorInfoSchema,
  RetryInfoSchema,
  VaultError,
  isVaultError,
  toVaultError,
} from "../src/index.js";

describe("VaultError", () => {
  it("reads RetryInfo's delay, ErrorInfo and the request id of RESOURCE_EXHAUSTED", () => {
    const cause = new ConnectError(
      "rate limit exceeded",
      Code.ResourceExhausted,
      { "x-request-id": "req-1" },
      [
        {
          desc: ErrorInfoSchema,
          value: { reason: "RATE_LIMITED", domain: "singura.vault", metadata: { retry_after_ms: "1500" } },
        },
        { desc: RetryInfoSchema, value: { retryDelay: { seconds: 1n, nanos: 500_000_000 } } },
      ],
    );
    const error = toVaultError(cause, "singura.vault.v1.OrganizationService/ListOrganizations");
    assert.ok(error instanceof VaultError);
    assert.ok(isVaultError(error, "RESOURCE_EXHAUSTED"));
    assert.equal(error.code, "RESOURCE_EXHAUSTED");
    assert.equal(error.grpcCode, Code.ResourceExhausted);
    assert.equal(error.message, "rate limit exceeded");
    assert.equal(error.reason, "RATE_LIMITED");
    assert.equal(error.domain, "singura.vault");
    assert.deepEqual(error.metadata, { retry_after_ms: "1500" });
    assert.equal(error.retryDelayMs, 1500);
    assert.equal(error.requestId, "req-1");
    assert.deepEqual(error.fieldViolations, []);
    assert.equal(error.connectError, cause);
    assert.equal(toVaultError(error), error, "a VaultError is not wrapped twice");
  });

  it("turns a network error without details into UNKNOWN with no reason", () => {
    const error = toVaultError(new Error("socket hang up"));
    assert.equal(error.code, "UNKNOWN");
    assert.equal(error.reason, "");
    assert.equal(error.retryDelayMs, undefined);
    assert.equal(error.requestId, undefined);
    assert.equal(isVaultError(error, "NOT_FOUND"), false);
  });
});
