/**
 * VaultError: the one error type the client throws for a failed call.
 *
 * The vault sends a standard google.rpc.Status in the `grpc-status-details-bin`
 * trailer (docs/errors.md): always an ErrorInfo in the "singura.vault" domain,
 * plus a BadRequest for INVALID_ARGUMENT, a RetryInfo for RESOURCE_EXHAUSTED with
 * a delay, and a PreconditionFailure for FAILED_PRECONDITION and ABORTED. Programs
 * switch on `reason` (or `code`), never on `message`.
 */
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";

import {
  BadRequestSchema,
  ErrorInfoSchema,
  PreconditionFailureSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";

/** gRPC status code names, as the vault's docs and other clients spell them. */
export type VaultErrorCode =
  | "CANCELLED"
  | "UNKNOWN"
  | "INVALID_ARGUMENT"
  | "DEADLINE_EXCEEDED"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "PERMISSION_DENIED"
  | "RESOURCE_EXHAUSTED"
  | "FAILED_PRECONDITION"
  | "ABORTED"
  | "OUT_OF_RANGE"
  | "UNIMPLEMENTED"
  | "INTERNAL"
  | "UNAVAILABLE"
  | "DATA_LOSS"
  | "UNAUTHENTICATED";

const CODE_NAMES: Record<Code, VaultErrorCode> = {
  [Code.Canceled]: "CANCELLED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "ABORTED",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};

/**
 * The ErrorInfo reasons docs/errors.md lists. `VaultError.reason` is typed as one of
 * these or any other string: a newer vault may send a reason this client does not
 * know yet, so a `switch` on it keeps a default branch.
 */
export type VaultErrorReason =
  | "INVALID_ARGUMENT"
  | "UNDECODABLE_REQUEST"
  | "REQUEST_TOO_LARGE"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "FAILED_PRECONDITION"
  | "CREDENTIAL_REVOKED"
  | "CONNECTION_NOT_ACTIVE"
  | "NO_REFRESH_TOKEN"
  | "NO_OAUTH_CLIENT"
  | "REFRESH_REJECTED"
  | OAuthAuthorizationReason
  | "CONCURRENT_CHANGE"
  | "STALE_ETAG"
  | "LIMIT_REACHED"
  | "RATE_LIMITED"
  | "PLAN_CONNECTION_LIMIT"
  | "UNAVAILABLE"
  | "PROVIDER_UNAVAILABLE"
  | "REFRESH_COOLING_DOWN"
  | "DEADLINE_EXCEEDED"
  | "INTEGRITY_CHECK_FAILED"
  | "API_KEY_INVALID"
  | "PERMISSION_DENIED"
  | "INTERNAL";

/**
 * Why CompleteAuthorization failed with FAILED_PRECONDITION (docs/oauth.md, "Connect a
 * workspace"). Each but OAUTH_IDENTITY_CHANGED means: start the authorization again.
 */
export type OAuthAuthorizationReason =
  /** No StartAuthorization returned this state. */
  | "OAUTH_STATE_UNKNOWN"
  /** Older than SINGURA_OAUTH_STATE_TTL. */
  | "OAUTH_STATE_EXPIRED"
  /** Already used by an earlier completion (a repeat with the same code after a success is answered instead). */
  | "OAUTH_STATE_USED"
  /** Started in another organization; now used up. */
  | "OAUTH_STATE_OTHER_ORGANIZATION"
  /** The data key that sealed the PKCE verifier was retired. */
  | "OAUTH_STATE_UNUSABLE"
  /** The provider sent an error instead of a code, named by metadata `oauth_error` (access_denied: declined). */
  | "OAUTH_AUTHORIZATION_DENIED"
  /** The provider refused the code (expired, replayed, redirect URI or verifier mismatch) or the client. */
  | "OAUTH_CODE_REJECTED"
  /** A reconnect's tokens are for another workspace or user; see allowIdentityChange. */
  | "OAUTH_IDENTITY_CHANGED"
  /** The connection being reconnected was deleted meanwhile. */
  | "OAUTH_RECONNECT_TARGET_GONE"
  /** The client's authorization or token endpoint is not usable: fix it with SetOAuthClient. */
  | "OAUTH_CLIENT_MISCONFIGURED";

/** The trailer the vault names each call with (also in its logs and audit events). */
export const REQUEST_ID_KEY = "x-request-id";

/** One field at fault, from google.rpc.BadRequest. */
export interface FieldViolation {
  /** Path of the request field, e.g. "organization.slug". */
  readonly field: string;
  /** Why it is wrong, for people. */
  readonly description: string;
}

/** One failed precondition, from google.rpc.PreconditionFailure. */
export interface PreconditionViolation {
  /** e.g. "STALE_ETAG". */
  readonly type: string;
  readonly subject: string;
  readonly description: string;
}

/** A failed vault call, with the structured details the server sent. */
export class VaultError extends Error {
  override readonly name = "VaultError";
  /** The gRPC status code name, e.g. "INVALID_ARGUMENT". */
  readonly code: VaultErrorCode;
  /** The numeric gRPC status code (connect's Code). */
  readonly grpcCode: Code;
  /**
   * ErrorInfo.reason, e.g. "STALE_ETAG" or "OAUTH_AUTHORIZATION_DENIED"; "" when the
   * server sent none (e.g. a network error). `(string & {})`: a reason this client
   * does not list yet still arrives, and editors still offer the listed ones.
   */
  readonly reason: VaultErrorReason | "" | (string & {});
  /** ErrorInfo.domain: "singura.vault" for the vault's own errors. */
  readonly domain: string;
  /** ErrorInfo.metadata (e.g. {"field": "organization.slug"}). */
  readonly metadata: Readonly<Record<string, string>>;
  /** From google.rpc.BadRequest (INVALID_ARGUMENT). */
  readonly fieldViolations: readonly FieldViolation[];
  /** From google.rpc.PreconditionFailure (FAILED_PRECONDITION, ABORTED). */
  readonly preconditionViolations: readonly PreconditionViolation[];
  /** From google.rpc.RetryInfo (RESOURCE_EXHAUSTED): wait at least this long. */
  readonly retryDelayMs: number | undefined;
  /** The `x-request-id` the vault answered with, to find the call in its logs. */
  readonly requestId: string | undefined;
  /** The RPC, e.g. "singura.vault.v1.OrganizationService/CreateOrganization". */
  readonly procedure: string | undefined;

  constructor(cause: ConnectError, procedure?: string) {
    // rawMessage: the server's message without connect's "[code]" prefix.
    super(cause.rawMessage, { cause });
    this.code = CODE_NAMES[cause.code] ?? "UNKNOWN";
    this.grpcCode = cause.code;
    this.procedure = procedure;
    this.requestId = cause.metadata.get(REQUEST_ID_KEY) ?? undefined;

    const info = safeFind(cause, ErrorInfoSchema)[0];
    this.reason = info?.reason ?? "";
    this.domain = info?.domain ?? "";
    this.metadata = { ...(info?.metadata ?? {}) };

    this.fieldViolations = safeFind(cause, BadRequestSchema).flatMap((d) =>
      d.fieldViolations.map((v) => ({ field: v.field, description: v.description })),
    );
    this.preconditionViolations = safeFind(cause, PreconditionFailureSchema).flatMap((d) =>
      d.violations.map((v) => ({ type: v.type, subject: v.subject, description: v.description })),
    );
    const delay = safeFind(cause, RetryInfoSchema)[0]?.retryDelay;
    this.retryDelayMs =
      delay === undefined ? undefined : Number(delay.seconds) * 1000 + Math.round(delay.nanos / 1e6);
  }

  /** The underlying ConnectError (also `cause`). */
  get connectError(): ConnectError {
    return this.cause as ConnectError;
  }
}

/** ConnectError.findDetails, but a detail that does not parse is left out, not thrown. */
function safeFind<Desc extends DescMessage>(error: ConnectError, schema: Desc): MessageShape<Desc>[] {
  try {
    return error.findDetails(schema);
  } catch {
    return [];
  }
}

/** Whatever a call threw, as a VaultError (a VaultError is returned as it is). */
export function toVaultError(error: unknown, procedure?: string): VaultError {
  if (error instanceof VaultError) {
    return error;
  }
  return new VaultError(ConnectError.from(error), procedure);
}

/** Type guard: `if (isVaultError(e, "NOT_FOUND")) ...`. */
export function isVaultError(error: unknown, code?: VaultErrorCode): error is VaultError {
  return error instanceof VaultError && (code === undefined || error.code === code);
}

/**
 * Type guard on the reason: `if (hasReason(e, "OAUTH_STATE_EXPIRED", "OAUTH_STATE_USED")) ...`.
 * Narrows to a VaultError with that reason, so the other branch keeps a VaultError.
 */
export function hasReason<R extends VaultErrorReason>(
  error: unknown,
  ...reasons: readonly R[]
): error is VaultError & { readonly reason: R } {
  return error instanceof VaultError && (reasons as readonly string[]).includes(error.reason);
}
