/**
 * createVaultClient: a typed facade over the generated singura-vault clients.
 *
 * One place decides, for every call (facade and `raw` alike): the API key
 * (`authorization: Bearer <key>`), the deadline, TLS, retries of UNAVAILABLE for
 * idempotent calls, and errors (always a VaultError).
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { CallOptions, Client, Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import type * as http2 from "node:http2";

import { toVaultError } from "./errors.js";
import { AccessService } from "./gen/singura/vault/v1/access_pb.js";
import {
  AuditService,
  type AuditEvent,
  type AuditOutcome,
  type VerifyAuditChainResponse,
} from "./gen/singura/vault/v1/audit_pb.js";
import {
  ConnectionService,
  type Connection,
  type ConnectionStatus,
  type Platform,
  type ProviderRevocation,
  type ScopeDrift,
} from "./gen/singura/vault/v1/connections_pb.js";
import {
  CredentialService,
  type Credential,
  type CredentialState,
  type CredentialType,
} from "./gen/singura/vault/v1/credentials_pb.js";
import { EventService, type Event, type ListEventsResponse } from "./gen/singura/vault/v1/events_pb.js";
import {
  KeyService,
  type GetOrganizationKeyProviderResponse,
  type OrganizationKeyMigration,
  type SetOrganizationKeyProviderResponse,
} from "./gen/singura/vault/v1/keys_pb.js";
import { OAuthService } from "./gen/singura/vault/v1/oauth_pb.js";
import { SignalService } from "./gen/singura/vault/v1/signals_pb.js";
import { WebhookService } from "./gen/singura/vault/v1/webhooks_pb.js";
import {
  OrganizationService,
  type Organization,
  type Plan,
} from "./gen/singura/vault/v1/organizations_pb.js";
import { createPolicyClient, type CallPolicy } from "./policy.js";

/** Which events: an organization's, of these types (all when empty), after a cursor (0: from the first). */
export interface EventQuery {
  readonly organizationId: string;
  readonly types?: readonly string[];
  readonly after?: number | bigint;
}

/** TLS settings; PEM text or bytes. Without `ca` the system's CAs are trusted. */
export interface TlsOptions {
  /** CA certificate(s) to trust instead of the system's. */
  readonly ca?: string | Buffer;
  /** Client certificate and key, for a vault that requires mutual TLS. */
  readonly cert?: string | Buffer;
  readonly key?: string | Buffer;
  /** The name to check the server certificate against (default: the address's host). */
  readonly serverName?: string;
}

export interface VaultClientOptions {
  /** "host:port" (e.g. "127.0.0.1:50051"), or a base URL "http://..." / "https://...". */
  readonly address: string;
  /** The vault API key (svk_...); sent as `authorization: Bearer <key>` on every call. */
  readonly apiKey: string;
  /** false (default): plaintext HTTP/2 (h2c), for loopback; true or options: TLS. */
  readonly tls?: false | true | TlsOptions;
  /** Deadline of each call, retries included, in ms (default 10 000; 0: none). */
  readonly timeoutMs?: number;
  /** Retries of an idempotent call after UNAVAILABLE (default 2). */
  readonly retries?: number;
  /** First retry backoff in ms (default 100); doubles per retry, at most 2 000. */
  readonly backoffMs?: number;
  /** More interceptors (after the API key's); they see every attempt of a call. */
  readonly interceptors?: readonly Interceptor[];
}

/** One page of a list call. */
export interface Page<T> {
  readonly items: T[];
  /** Pass as `pageToken` for the next page; "" on the last page. */
  readonly nextPageToken: string;
}

export interface PageRequest {
  readonly pageSize?: number;
  readonly pageToken?: string;
}

export interface OrganizationInput {
  readonly name: string;
  readonly slug: string;
  readonly domain: string;
  readonly plan: Plan;
  readonly settings?: JsonObject;
}

/** Fields UpdateOrganization's mask may name. */
export type OrganizationField = "name" | "slug" | "domain" | "plan" | "settings";

export interface ConnectionInput {
  readonly organizationId: string;
  readonly platform: Platform;
  readonly platformUserId: string;
  readonly platformWorkspaceId?: string;
  readonly displayName: string;
  readonly permissionsGranted?: string[];
  readonly metadata?: JsonObject;
}

/** Fields UpdateConnection's mask may name. */
export type ConnectionField = "display_name" | "metadata" | "permissions_granted";

export interface ConnectionFilters extends PageRequest {
  readonly platform?: Platform;
  readonly status?: ConnectionStatus;
  /** Only connections whose granted scopes differ from the requested ones (MISSING, EXTRA or ANY). */
  readonly scopeDrift?: ScopeDrift;
  /** Include deleted connections (still recoverable) in the list. */
  readonly showDeleted?: boolean;
}

export interface StoreCredentialInput {
  readonly organizationId: string;
  readonly connectionId: string;
  readonly type: CredentialType;
  /** The secret (1 byte to 64 KiB of UTF-8). Never logged by the client or the vault. */
  readonly value: string;
  readonly expireTime?: Date;
  /** Idempotency key (a UUID): a store is retried after UNAVAILABLE only when it has one. */
  readonly requestId?: string;
  /**
   * Check-and-set: store only if this version is the current one (0: none yet), else
   * ABORTED with reason CREDENTIAL_VERSION_MISMATCH and `current_version` in its metadata.
   */
  readonly expectedVersion?: number;
}

export interface CredentialAddress {
  readonly organizationId: string;
  readonly connectionId: string;
  readonly type: CredentialType;
  /** 0 or absent: the current version. */
  readonly version?: number;
}

/** A fixed version of a credential (a version state change never means "the current one"). */
export interface CredentialVersionAddress extends CredentialAddress {
  readonly version: number;
}

/** An organization's own transit key (customer-managed keys, docs/customer-managed-keys.md). */
export interface OrganizationKeyProviderInput {
  readonly organizationId: string;
  /** The OpenBao/Vault address, e.g. https://kms.tenant.example:8200. */
  readonly address: string;
  readonly keyName: string;
  /** The transit mount; empty means "transit". */
  readonly mount?: string;
  /** A token allowed to encrypt and decrypt with the key; sent once, never returned. */
  readonly token: string;
}

export interface RevealedCredential {
  readonly credential: Credential;
  readonly value: string;
}

export interface ListCredentialsInput extends PageRequest {
  readonly organizationId: string;
  readonly connectionId: string;
  readonly type?: CredentialType;
  readonly state?: CredentialState;
}

export interface AuditFilterInput {
  readonly startTime?: Date;
  readonly endTime?: Date;
  readonly action?: string;
  readonly resourceType?: string;
  readonly resourceId?: string;
  readonly actor?: string;
  readonly outcome?: AuditOutcome;
}

export interface AuditQuery {
  /** The organization; "" for the system trail (admin keys only). */
  readonly organizationId: string;
  readonly filter?: AuditFilterInput;
}

export interface StartAuthorizationInput {
  readonly organizationId: string;
  /** The platform; the organization needs an OAuth client for it (SetOAuthClient). */
  readonly platform: Platform;
  /** Exactly one of the OAuth client's redirect_uris (no prefix or pattern matching). */
  readonly redirectUri: string;
  /** Scopes to request; empty or absent: the OAuth client's configured scopes. */
  readonly scopes?: readonly string[];
  /** Reconnect this connection (new tokens, same id); absent: a new connection. */
  readonly connectionId?: string;
  /** Name of a new connection (default "<platform> connection"). */
  readonly displayName?: string;
  /** Passed to the provider as its login hint (an email or user name). */
  readonly loginHint?: string;
  /** Only keys the platform's catalogue entry allows (Google access_type, Slack user_scope, ...). */
  readonly extraParams?: Readonly<Record<string, string>>;
}

/** What StartAuthorization returns: send the browser to `authorizationUrl`. */
export interface StartedAuthorization {
  /** Carries the state and the PKCE challenge, never the verifier or the client secret. */
  readonly authorizationUrl: string;
  /** The state the provider sends back to the redirect URI (43 characters, single use). */
  readonly state: string;
  /** When the state expires (SINGURA_OAUTH_STATE_TTL after the start, 10 minutes by default). */
  readonly expireTime: Date;
}

/** What the provider sent to the redirect URI: a code, or an error instead of one. */
export interface AuthorizationCallback {
  readonly state: string;
  /** The single-use authorization code; "" when the provider sent an error. */
  readonly code?: string;
  /** The provider's error code (access_denied: the user pressed "Deny"). */
  readonly error?: string;
  /** Never stored or echoed by the vault. */
  readonly errorDescription?: string;
}

export interface CompleteAuthorizationInput extends AuthorizationCallback {
  readonly organizationId: string;
  /** On a reconnect, accept tokens for another workspace or user than the connection's. */
  readonly allowIdentityChange?: boolean;
}

/** What CompleteAuthorization returns; never a token. */
export interface CompletedAuthorization {
  /** The new or reconnected connection, ACTIVE. */
  readonly connection: Connection;
  readonly requestedScopes: string[];
  /** What the provider reports it granted (the requested scopes if it reported none). */
  readonly grantedScopes: string[];
  /** True for a reconnect of an existing connection. */
  readonly reauthorized: boolean;
  /** A reconnect: what revoking the previous refresh token at the platform came to. */
  readonly previousRefreshTokenRevocation: ProviderRevocation | undefined;
}

/**
 * The callback's query string (`state`, `code`, `error`, `error_description`) as
 * completeAuthorization takes it. Accepts the request URL's search params, a URL, or a
 * query string; a parameter given twice counts by its first value.
 */
export function authorizationCallback(query: URLSearchParams | URL | string): AuthorizationCallback {
  const params =
    query instanceof URLSearchParams
      ? query
      : query instanceof URL
        ? query.searchParams
        : new URLSearchParams(query);
  return {
    state: params.get("state") ?? "",
    code: params.get("code") ?? "",
    error: params.get("error") ?? "",
    errorDescription: params.get("error_description") ?? "",
  };
}

export interface VaultClient {
  readonly organizations: {
    create(org: OrganizationInput & { requestId?: string }, options?: CallOptions): Promise<Organization>;
    get(id: string, options?: CallOptions): Promise<Organization>;
    list(page?: PageRequest, options?: CallOptions): Promise<Page<Organization>>;
    /** Every organization, page after page. */
    listAll(page?: Omit<PageRequest, "pageToken">, options?: CallOptions): AsyncIterable<Organization>;
    update(
      org: Partial<OrganizationInput> & { readonly id: string },
      updateMask: readonly OrganizationField[],
      etag?: string,
      options?: CallOptions,
    ): Promise<Organization>;
    delete(id: string, etag?: string, options?: CallOptions): Promise<void>;
  };
  readonly connections: {
    create(connection: ConnectionInput & { requestId?: string }, options?: CallOptions): Promise<Connection>;
    get(organizationId: string, connectionId: string, options?: CallOptions): Promise<Connection>;
    list(organizationId: string, filters?: ConnectionFilters, options?: CallOptions): Promise<Page<Connection>>;
    update(
      connection: Partial<Omit<ConnectionInput, "organizationId">> & {
        readonly organizationId: string;
        readonly id: string;
      },
      updateMask: readonly ConnectionField[],
      etag?: string,
      options?: CallOptions,
    ): Promise<Connection>;
    updateStatus(
      organizationId: string,
      connectionId: string,
      change: { readonly status: ConnectionStatus; readonly reason: string; readonly etag?: string },
      options?: CallOptions,
    ): Promise<Connection>;
    /**
     * Marks the connection deleted: it stays recoverable with its credentials (undelete)
     * for the vault's recovery window, unless `force` removes it at once. Returns what
     * the platform said when revokeAtProvider was set.
     */
    delete(
      organizationId: string,
      connectionId: string,
      opts?: { readonly etag?: string; readonly revokeAtProvider?: boolean; readonly force?: boolean },
      options?: CallOptions,
    ): Promise<ProviderRevocation | undefined>;
    /** Restores a deleted connection, with its credentials, before it is purged. */
    undelete(organizationId: string, connectionId: string, options?: CallOptions): Promise<Connection>;
  };
  readonly credentials: {
    /** Returns metadata only: the value is never sent back. */
    store(input: StoreCredentialInput, options?: CallOptions): Promise<Credential>;
    /** Audited as credential.revealed. */
    reveal(address: CredentialAddress, options?: CallOptions): Promise<RevealedCredential>;
    get(organizationId: string, credentialId: string, options?: CallOptions): Promise<Credential>;
    list(input: ListCredentialsInput, options?: CallOptions): Promise<Page<Credential>>;
    /** DisableCredentialVersion: refused on reveal, skipped as the current version. Writer role. */
    disableVersion(address: CredentialVersionAddress, options?: CallOptions): Promise<Credential>;
    /** EnableCredentialVersion: usable again. Writer role. */
    enableVersion(address: CredentialVersionAddress, options?: CallOptions): Promise<Credential>;
    /** DestroyCredentialVersion: erased for good after the vault's destroy delay; cancellable until then. */
    destroyVersion(address: CredentialVersionAddress, options?: CallOptions): Promise<Credential>;
    /** CancelCredentialDestroy: back to the state it had before DestroyCredentialVersion. */
    cancelDestroy(address: CredentialVersionAddress, options?: CallOptions): Promise<Credential>;
  };
  /** Customer-managed keys: admin keys set and clear; an organization's reader may get. */
  readonly keys: {
    /** Validates the key (wrap and unwrap a probe), then migrates the organization's data keys to it. */
    setOrganizationKeyProvider(
      input: OrganizationKeyProviderInput,
      options?: CallOptions,
    ): Promise<SetOrganizationKeyProviderResponse>;
    /** The provider in force (never its token) and the latest migration. */
    getOrganizationKeyProvider(
      organizationId: string,
      options?: CallOptions,
    ): Promise<GetOrganizationKeyProviderResponse>;
    /** Migrates the organization's data keys back to the global root key. */
    clearOrganizationKeyProvider(organizationId: string, options?: CallOptions): Promise<OrganizationKeyMigration>;
  };
  readonly audit: {
    /**
     * ExportAuditEvents: every matching event, oldest first, as one async iterator
     * over the stream's batches. The call's deadline covers the whole stream: pass
     * a larger `timeoutMs` (or 0) for a large export.
     */
    export(query: AuditQuery, options?: CallOptions): AsyncIterable<AuditEvent>;
    list(query: AuditQuery & PageRequest, options?: CallOptions): Promise<Page<AuditEvent>>;
    verify(organizationId: string, options?: CallOptions): Promise<VerifyAuditChainResponse>;
  };
  readonly events: {
    /** ListEvents: one page after the cursor `after`; ask again with `nextAfter` while `more`. */
    list(query: EventQuery & { readonly pageSize?: number }, options?: CallOptions): Promise<ListEventsResponse>;
    /**
     * WatchEvents: the events after the cursor `after`, then each new one as it commits,
     * until the caller stops iterating. No deadline unless `timeoutMs` is given. After a
     * broken stream, watch again from the last event's `cursor`: no gap, no duplicate.
     */
    watch(query: EventQuery, options?: CallOptions): AsyncIterable<Event>;
  };
  readonly oauth: {
    /**
     * StartAuthorization: the URL to send the user's browser to, and the state the
     * provider will send back with the code. The client secret and the PKCE verifier
     * stay in the vault. Writer role. Not retried (each call starts a new authorization).
     */
    startAuthorization(input: StartAuthorizationInput, options?: CallOptions): Promise<StartedAuthorization>;
    /**
     * CompleteAuthorization with what the provider sent to the redirect URI: the vault
     * checks the state, exchanges the code and stores the tokens in a new (or the
     * reconnected) connection. Writer role. A repeat with the same state and code after
     * a success returns the same answer without calling the provider; the client does
     * not repeat it by itself. Fails FAILED_PRECONDITION with reason
     * OAUTH_AUTHORIZATION_DENIED (metadata `oauth_error`) when the provider sent an
     * error, OAUTH_STATE_* for a state that is unknown, expired, used or another
     * organization's, OAUTH_CODE_REJECTED when the provider refused the code.
     */
    completeAuthorization(
      input: CompleteAuthorizationInput,
      options?: CallOptions,
    ): Promise<CompletedAuthorization>;
  };
  /** The generated clients, under the same key, deadline, retry and error policy. */
  readonly raw: {
    readonly organizations: Client<typeof OrganizationService>;
    readonly connections: Client<typeof ConnectionService>;
    readonly credentials: Client<typeof CredentialService>;
    readonly access: Client<typeof AccessService>;
    readonly audit: Client<typeof AuditService>;
    readonly events: Client<typeof EventService>;
    readonly keys: Client<typeof KeyService>;
    readonly oauth: Client<typeof OAuthService>;
    readonly webhooks: Client<typeof WebhookService>;
    readonly signals: Client<typeof SignalService>;
  };
  /** Closes the HTTP/2 connection; calls still running fail with CANCELLED. */
  close(): void;
}

export const DEFAULT_TIMEOUT_MS = 10_000;
export const DEFAULT_RETRIES = 2;
const DEFAULT_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 2_000;

/** The base URL and node:http2 options for an address and TLS setting. */
export function transportTarget(
  address: string,
  tls: VaultClientOptions["tls"],
): { baseUrl: string; nodeOptions: http2.SecureClientSessionOptions } {
  const hasScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(address);
  const baseUrl = hasScheme ? address : `${tls ? "https" : "http"}://${address}`;
  const secure = baseUrl.toLowerCase().startsWith("https://");
  if (!secure && tls) {
    throw new TypeError(`tls is set, but the address ${address} is not https://`);
  }
  if (!secure && !baseUrl.toLowerCase().startsWith("http://")) {
    throw new TypeError(`unsupported address ${address}: use host:port, http:// or https://`);
  }
  const nodeOptions: http2.SecureClientSessionOptions = {};
  if (typeof tls === "object") {
    if (tls.ca !== undefined) nodeOptions.ca = tls.ca;
    if (tls.cert !== undefined) nodeOptions.cert = tls.cert;
    if (tls.key !== undefined) nodeOptions.key = tls.key;
    if (tls.serverName !== undefined) nodeOptions.servername = tls.serverName;
  }
  return { baseUrl, nodeOptions };
}

/** The interceptor that sends the API key on every call. */
export function apiKeyInterceptor(apiKey: string): Interceptor {
  const value = `Bearer ${apiKey}`;
  return (next) => async (req) => {
    req.header.set("authorization", value);
    return next(req);
  };
}

/** A field the vault always sets, or an INTERNAL VaultError naming the RPC. */
function required<T>(value: T | undefined, what: string, procedure: string): T {
  if (value === undefined) {
    throw toVaultError(new ConnectError(`the response has no ${what}`, Code.Internal), procedure);
  }
  return value;
}

function auditFilter(filter: AuditFilterInput | undefined) {
  if (filter === undefined) {
    return undefined;
  }
  return {
    ...filter,
    startTime: filter.startTime && timestampFromDate(filter.startTime),
    endTime: filter.endTime && timestampFromDate(filter.endTime),
  };
}

export function createVaultClient(options: VaultClientOptions): VaultClient {
  if (!options.apiKey) {
    throw new TypeError("apiKey is required");
  }
  const { baseUrl, nodeOptions } = transportTarget(options.address, options.tls);
  const policy: CallPolicy = {
    timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    retries: Math.max(0, options.retries ?? DEFAULT_RETRIES),
    backoffMs: options.backoffMs ?? DEFAULT_BACKOFF_MS,
    maxBackoffMs: MAX_BACKOFF_MS,
  };
  const sessionManager = new Http2SessionManager(baseUrl, {}, nodeOptions);
  const transport = createGrpcTransport({
    baseUrl,
    sessionManager,
    interceptors: [apiKeyInterceptor(options.apiKey), ...(options.interceptors ?? [])],
  });
  const raw = {
    organizations: createPolicyClient(OrganizationService, transport, policy),
    connections: createPolicyClient(ConnectionService, transport, policy),
    credentials: createPolicyClient(CredentialService, transport, policy),
    access: createPolicyClient(AccessService, transport, policy),
    audit: createPolicyClient(AuditService, transport, policy),
    events: createPolicyClient(EventService, transport, policy),
    keys: createPolicyClient(KeyService, transport, policy),
    oauth: createPolicyClient(OAuthService, transport, policy),
    webhooks: createPolicyClient(WebhookService, transport, policy),
    signals: createPolicyClient(SignalService, transport, policy),
  };
  const orgRpc = (name: string) => `${OrganizationService.typeName}/${name}`;
  const connRpc = (name: string) => `${ConnectionService.typeName}/${name}`;
  const credRpc = (name: string) => `${CredentialService.typeName}/${name}`;
  const oauthRpc = (name: string) => `${OAuthService.typeName}/${name}`;

  const organizations: VaultClient["organizations"] = {
    async create({ requestId, ...org }, callOptions) {
      const res = await raw.organizations.createOrganization({ organization: org, requestId }, callOptions);
      return required(res.organization, "organization", orgRpc("CreateOrganization"));
    },
    async get(id, callOptions) {
      const res = await raw.organizations.getOrganization({ organizationId: id }, callOptions);
      return required(res.organization, "organization", orgRpc("GetOrganization"));
    },
    async list(page, callOptions) {
      const res = await raw.organizations.listOrganizations({ ...page }, callOptions);
      return { items: res.organizations, nextPageToken: res.nextPageToken };
    },
    async *listAll(page, callOptions) {
      let pageToken = "";
      do {
        const res = await organizations.list({ ...page, pageToken }, callOptions);
        yield* res.items;
        pageToken = res.nextPageToken;
      } while (pageToken !== "");
    },
    async update(org, updateMask, etag, callOptions) {
      const res = await raw.organizations.updateOrganization(
        { organization: org, updateMask: { paths: [...updateMask] }, etag: etag ?? "" },
        callOptions,
      );
      return required(res.organization, "organization", orgRpc("UpdateOrganization"));
    },
    async delete(id, etag, callOptions) {
      await raw.organizations.deleteOrganization({ organizationId: id, etag: etag ?? "" }, callOptions);
    },
  };

  const connections: VaultClient["connections"] = {
    async create({ requestId, ...connection }, callOptions) {
      const res = await raw.connections.createConnection({ connection, requestId }, callOptions);
      return required(res.connection, "connection", connRpc("CreateConnection"));
    },
    async get(organizationId, connectionId, callOptions) {
      const res = await raw.connections.getConnection({ organizationId, connectionId }, callOptions);
      return required(res.connection, "connection", connRpc("GetConnection"));
    },
    async list(organizationId, filters, callOptions) {
      const res = await raw.connections.listConnections({ ...filters, organizationId }, callOptions);
      return { items: res.connections, nextPageToken: res.nextPageToken };
    },
    async update(connection, updateMask, etag, callOptions) {
      const res = await raw.connections.updateConnection(
        { connection, updateMask: { paths: [...updateMask] }, etag: etag ?? "" },
        callOptions,
      );
      return required(res.connection, "connection", connRpc("UpdateConnection"));
    },
    async updateStatus(organizationId, connectionId, change, callOptions) {
      const res = await raw.connections.updateConnectionStatus(
        { organizationId, connectionId, ...change },
        callOptions,
      );
      return required(res.connection, "connection", connRpc("UpdateConnectionStatus"));
    },
    async delete(organizationId, connectionId, opts, callOptions) {
      const res = await raw.connections.deleteConnection(
        {
          organizationId,
          connectionId,
          etag: opts?.etag ?? "",
          revokeAtProvider: opts?.revokeAtProvider ?? false,
          force: opts?.force ?? false,
        },
        callOptions,
      );
      return res.providerRevocation;
    },
    async undelete(organizationId, connectionId, callOptions) {
      const res = await raw.connections.undeleteConnection({ organizationId, connectionId }, callOptions);
      return required(res.connection, "connection", connRpc("UndeleteConnection"));
    },
  };

  const credentials: VaultClient["credentials"] = {
    async store({ expireTime, ...input }, callOptions) {
      const res = await raw.credentials.storeCredential(
        { ...input, expireTime: expireTime && timestampFromDate(expireTime) },
        callOptions,
      );
      return required(res.credential, "credential", credRpc("StoreCredential"));
    },
    async reveal(address, callOptions) {
      const res = await raw.credentials.revealCredential({ ...address }, callOptions);
      return {
        credential: required(res.credential, "credential", credRpc("RevealCredential")),
        value: res.value,
      };
    },
    async get(organizationId, credentialId, callOptions) {
      const res = await raw.credentials.getCredential({ organizationId, credentialId }, callOptions);
      return required(res.credential, "credential", credRpc("GetCredential"));
    },
    async list(input, callOptions) {
      const res = await raw.credentials.listCredentials({ ...input }, callOptions);
      return { items: res.credentials, nextPageToken: res.nextPageToken };
    },
    async disableVersion(address, callOptions) {
      const res = await raw.credentials.disableCredentialVersion({ ...address }, callOptions);
      return required(res.credential, "credential", credRpc("DisableCredentialVersion"));
    },
    async enableVersion(address, callOptions) {
      const res = await raw.credentials.enableCredentialVersion({ ...address }, callOptions);
      return required(res.credential, "credential", credRpc("EnableCredentialVersion"));
    },
    async destroyVersion(address, callOptions) {
      const res = await raw.credentials.destroyCredentialVersion({ ...address }, callOptions);
      return required(res.credential, "credential", credRpc("DestroyCredentialVersion"));
    },
    async cancelDestroy(address, callOptions) {
      const res = await raw.credentials.cancelCredentialDestroy({ ...address }, callOptions);
      return required(res.credential, "credential", credRpc("CancelCredentialDestroy"));
    },
  };

  const keys: VaultClient["keys"] = {
    async setOrganizationKeyProvider({ token, ...input }, callOptions) {
      return raw.keys.setOrganizationKeyProvider(
        { ...input, mount: input.mount ?? "", authentication: { token } },
        callOptions,
      );
    },
    async getOrganizationKeyProvider(organizationId, callOptions) {
      return raw.keys.getOrganizationKeyProvider({ organizationId }, callOptions);
    },
    async clearOrganizationKeyProvider(organizationId, callOptions) {
      const res = await raw.keys.clearOrganizationKeyProvider({ organizationId }, callOptions);
      return required(res.migration, "migration", `${KeyService.typeName}/ClearOrganizationKeyProvider`);
    },
  };

  const audit: VaultClient["audit"] = {
    async *export({ organizationId, filter }, callOptions) {
      const stream = raw.audit.exportAuditEvents(
        { organizationId, filter: auditFilter(filter) },
        callOptions,
      );
      for await (const batch of stream) {
        yield* batch.events;
      }
    },
    async list({ organizationId, filter, pageSize, pageToken }, callOptions) {
      const res = await raw.audit.listAuditEvents(
        { organizationId, filter: auditFilter(filter), pageSize, pageToken },
        callOptions,
      );
      return { items: res.events, nextPageToken: res.nextPageToken };
    },
    async verify(organizationId, callOptions) {
      return raw.audit.verifyAuditChain({ organizationId }, callOptions);
    },
  };

  const events: VaultClient["events"] = {
    async list({ organizationId, types, after, pageSize }, callOptions) {
      return raw.events.listEvents(
        { organizationId, types: [...(types ?? [])], after: BigInt(after ?? 0), pageSize },
        callOptions,
      );
    },
    async *watch({ organizationId, types, after }, callOptions) {
      const stream = raw.events.watchEvents(
        { organizationId, types: [...(types ?? [])], after: BigInt(after ?? 0) },
        { timeoutMs: 0, ...callOptions },
      );
      for await (const response of stream) {
        if (response.event) yield response.event;
      }
    },
  };

  const oauth: VaultClient["oauth"] = {
    async startAuthorization({ scopes, extraParams, ...input }, callOptions) {
      const res = await raw.oauth.startAuthorization(
        { ...input, scopes: [...(scopes ?? [])], extraParams: { ...extraParams } },
        callOptions,
      );
      const expireTime = required(res.expireTime, "expire_time", oauthRpc("StartAuthorization"));
      return {
        authorizationUrl: res.authorizationUrl,
        state: res.state,
        expireTime: timestampDate(expireTime),
      };
    },
    async completeAuthorization(input, callOptions) {
      const res = await raw.oauth.completeAuthorization({ ...input }, callOptions);
      return {
        connection: required(res.connection, "connection", oauthRpc("CompleteAuthorization")),
        requestedScopes: res.requestedScopes,
        grantedScopes: res.grantedScopes,
        reauthorized: res.reauthorized,
        previousRefreshTokenRevocation: res.previousRefreshTokenRevocation,
      };
    },
  };

  return {
    organizations,
    connections,
    credentials,
    keys,
    audit,
    events,
    oauth,
    raw,
    close() {
      sessionManager.abort();
    },
  };
}
