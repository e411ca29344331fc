/**
 * @singura/vault-client: a typed TypeScript client for singura-vault.
 *
 * `createVaultClient` is the facade; the generated message types, enums and
 * service descriptors are re-exported, so callers import from one place.
 */
export * from "./vault.js";
export * from "./errors.js";
export { isIdempotent } from "./policy.js";
export * from "./gen/singura/vault/v1/access_pb.js";
export * from "./gen/singura/vault/v1/audit_pb.js";
export * from "./gen/singura/vault/v1/connections_pb.js";
export * from "./gen/singura/vault/v1/credentials_pb.js";
export * from "./gen/singura/vault/v1/events_pb.js";
export * from "./gen/singura/vault/v1/keys_pb.js";
export * from "./gen/singura/vault/v1/oauth_pb.js";
export * from "./gen/singura/vault/v1/signals_pb.js";
export * from "./gen/singura/vault/v1/webhooks_pb.js";
export * from "./gen/singura/vault/v1/organizations_pb.js";
export * from "./gen/google/rpc/error_details_pb.js";
