// What the node tests share: their environment (set by tests/integration/test_typescript_client.py)
// and the assertion that a call fails with a VaultError.

import assert from "node:assert/strict";

import { VaultError } from "../src/index.js";

/** A variable the pytest wrapper sets; a clear error when run any other way. */
export function env(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run this through tests/integration/test_typescript_client.py`);
  }
  return value;
}

/** Asserts the call fails with a VaultError and returns it. */
export async function failure(call: Promise<unknown>): Promise<VaultError> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof VaultError, `expected a VaultError, got ${String(error)}`);
    return error;
  }
  assert.fail("the call succeeded");
}
