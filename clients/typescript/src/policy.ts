/**
 * The call policy every client of createVaultClient goes through, facade and raw
 * alike: one deadline per call (shared by its retries), retries of UNAVAILABLE for
 * idempotent calls only, with small exponential backoff, and every failure thrown
 * as a VaultError.
 */
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { CallOptions, Client, Transport } from "@connectrpc/connect";

import { toVaultError, type VaultError } from "./errors.js";

export interface CallPolicy {
  /** Deadline of one call, retries included, in ms; 0 means none. */
  readonly timeoutMs: number;
  /** How many times an idempotent call is tried again after UNAVAILABLE. */
  readonly retries: number;
  /** First backoff delay in ms; doubles per retry (with jitter), capped at maxBackoffMs. */
  readonly backoffMs: number;
  readonly maxBackoffMs: number;
}

/** Reads: safe to send again whatever the first attempt did on the server. */
const READ_METHOD = /^(Get|List|Reveal|BatchReveal|Export|Verify)[A-Z]/;
/** Creates that the server de-duplicates by request_id. */
const KEYED_CREATE_METHOD = /^(Create|Store)[A-Z]/;

/**
 * Whether a call may be sent again after UNAVAILABLE: reads always; creates and
 * stores only when they carry a request_id (the server then returns what the
 * first attempt made instead of making it twice); nothing else.
 */
export function isIdempotent(method: DescMethod, request: unknown): boolean {
  if (READ_METHOD.test(method.name)) {
    return true;
  }
  if (KEYED_CREATE_METHOD.test(method.name) && method.input.fields.some((f) => f.name === "request_id")) {
    const requestId = (request as { requestId?: unknown } | null)?.requestId;
    return typeof requestId === "string" && requestId.length > 0;
  }
  return false;
}

/** The delay before retry number `attempt` (1-based): exponential, half of it jittered. */
export function backoffDelayMs(policy: CallPolicy, attempt: number): number {
  const ceiling = Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** (attempt - 1));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/** Waits ms, or fails with CANCELLED as soon as the caller's signal aborts. */
function sleep(ms: number, signal: AbortSignal | undefined, procedure: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const cancelled = (): VaultError =>
      toVaultError(new ConnectError("the call was cancelled", Code.Canceled), procedure);
    if (signal?.aborted) {
      reject(cancelled());
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(cancelled());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** A call's deadline: `timeoutMs` from now for all of its attempts together. */
class Deadline {
  private readonly at: number | undefined;

  constructor(timeoutMs: number) {
    this.at = timeoutMs > 0 ? Date.now() + timeoutMs : undefined;
  }

  /** Options for the next attempt, with the time that is left (connect: <= 0 is none). */
  attempt(options: CallOptions | undefined): CallOptions {
    if (this.at === undefined) {
      return { ...options, timeoutMs: 0 };
    }
    return { ...options, timeoutMs: Math.max(1, this.at - Date.now()) };
  }

  /** Whether waiting `ms` more still leaves time for another attempt. */
  allows(ms: number): boolean {
    return this.at === undefined || Date.now() + ms < this.at;
  }
}

type UnaryFn = (request: unknown, options?: CallOptions) => Promise<unknown>;
type StreamFn = (request: unknown, options?: CallOptions) => AsyncIterable<unknown>;

function procedureOf(service: DescService, method: DescMethod): string {
  return `${service.typeName}/${method.name}`;
}

function wrapUnary(service: DescService, method: DescMethod, call: UnaryFn, policy: CallPolicy): UnaryFn {
  const procedure = procedureOf(service, method);
  return async (request, options) => {
    const deadline = new Deadline(options?.timeoutMs ?? policy.timeoutMs);
    const retries = isIdempotent(method, request) ? policy.retries : 0;
    for (let attempt = 1; ; attempt++) {
      try {
        return await call(request, deadline.attempt(options));
      } catch (error) {
        const failure = toVaultError(error, procedure);
        const delay = backoffDelayMs(policy, attempt);
        if (failure.grpcCode !== Code.Unavailable || attempt > retries || !deadline.allows(delay)) {
          throw failure;
        }
        await sleep(delay, options?.signal, procedure);
      }
    }
  };
}

function wrapStream(service: DescService, method: DescMethod, call: StreamFn, policy: CallPolicy): StreamFn {
  const procedure = procedureOf(service, method);
  // A stream is retried only while nothing of it was received: the caller has seen
  // no message yet, so starting over cannot duplicate or skip one.
  return async function* (request, options) {
    const deadline = new Deadline(options?.timeoutMs ?? policy.timeoutMs);
    const retries = isIdempotent(method, request) ? policy.retries : 0;
    for (let attempt = 1; ; attempt++) {
      let received = false;
      try {
        for await (const message of call(request, deadline.attempt(options))) {
          received = true;
          yield message;
        }
        return;
      } catch (error) {
        const failure = toVaultError(error, procedure);
        const delay = backoffDelayMs(policy, attempt);
        if (
          received ||
          failure.grpcCode !== Code.Unavailable ||
          attempt > retries ||
          !deadline.allows(delay)
        ) {
          throw failure;
        }
        await sleep(delay, options?.signal, procedure);
      }
    }
  };
}

/**
 * A generated service's client (createClient's Client<S>, same methods and types)
 * whose every call goes through `policy`.
 */
export function createPolicyClient<S extends DescService>(
  service: S,
  transport: Transport,
  policy: CallPolicy,
): Client<S> {
  const plain = createClient(service, transport) as unknown as Record<string, UnaryFn | StreamFn>;
  const wrapped: Record<string, UnaryFn | StreamFn> = {};
  for (const method of service.methods) {
    const call = plain[method.localName];
    if (call === undefined) {
      continue;
    }
    switch (method.methodKind) {
      case "unary":
        wrapped[method.localName] = wrapUnary(service, method, call as UnaryFn, policy);
        break;
      case "server_streaming":
        wrapped[method.localName] = wrapStream(service, method, call as StreamFn, policy);
        break;
      default:
        // Client and bidi streams (the vault has none): passed through as generated.
        wrapped[method.localName] = call;
    }
  }
  return wrapped as unknown as Client<S>;
}
