-- 001_initial_schema: organizations, platform connections, encrypted credentials, audit log.
--
-- Runs as the schema owner (DATABASE_OWNER_URL, or singura_owner in embedded mode).
-- The vault serves as a different login role that is a member of singura_app: it
-- owns nothing, has no BYPASSRLS, and every tenant table FORCEs row-level security,
-- so the database itself keeps tenants apart even if the service forgot to.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'singura_app') THEN
        RAISE EXCEPTION 'role singura_app does not exist'
            USING HINT = 'As a superuser run: CREATE ROLE singura_app NOLOGIN NOBYPASSRLS; '
                         'then GRANT singura_app TO the login role in DATABASE_URL '
                         '(see docs/operations.md).';
    END IF;
END
$$;

GRANT USAGE ON SCHEMA singura TO singura_app;

-- The tenant of the current transaction, set by the service with
-- set_config('singura.organization_id', ..., true) (transaction-scoped, so a
-- pooled connection never carries it into the next request).
CREATE FUNCTION singura.current_organization_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('singura.organization_id', true), '')::uuid $$;

-- Admin scope lets a transaction see and create organization rows (listing
-- tenants, creating one, idempotent-create lookups) and append system audit
-- events that belong to no organization. It never opens tenant data: no policy
-- on connections or credentials consults it, and it reads no audit row.
CREATE FUNCTION singura.is_admin_scope() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(current_setting('singura.scope', true), '') = 'admin' $$;

-- Every mutable row carries a version that the etag is made of; this trigger
-- bumps it and updated_at on every UPDATE so no code path can forget to.
CREATE FUNCTION singura.touch_row() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.version := OLD.version + 1;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- Reference data: the connection limit of each plan.
CREATE TABLE singura.plans (
    plan             text PRIMARY KEY,
    connection_limit integer NOT NULL CHECK (connection_limit > 0)
);
INSERT INTO singura.plans (plan, connection_limit) VALUES
    ('free', 3), ('starter', 10), ('professional', 50), ('enterprise', 1000);

CREATE TABLE singura.organizations (
    id                uuid PRIMARY KEY,
    name              text NOT NULL
        CONSTRAINT organizations_name_length CHECK (char_length(name) BETWEEN 1 AND 200),
    slug              text NOT NULL
        CONSTRAINT organizations_slug_format
        CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$'),
    domain            text NOT NULL
        CONSTRAINT organizations_domain_format
        CHECK (domain = lower(domain) AND char_length(domain) BETWEEN 3 AND 253),
    plan              text NOT NULL REFERENCES singura.plans (plan),
    settings          jsonb NOT NULL DEFAULT '{}'
        CONSTRAINT organizations_settings_object CHECK (jsonb_typeof(settings) = 'object'),
    -- Idempotency key of the CreateOrganization call that made this row.
    create_request_id uuid,
    version           bigint NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT organizations_slug_key UNIQUE (slug),
    CONSTRAINT organizations_domain_key UNIQUE (domain),
    CONSTRAINT organizations_request_key UNIQUE (create_request_id)
);
-- ListOrganizations: keyset pagination ORDER BY created_at, id.
CREATE INDEX organizations_created_idx ON singura.organizations (created_at, id);

CREATE TRIGGER organizations_touch BEFORE UPDATE ON singura.organizations
    FOR EACH ROW EXECUTE FUNCTION singura.touch_row();

CREATE TABLE singura.platform_connections (
    organization_id       uuid NOT NULL REFERENCES singura.organizations (id) ON DELETE CASCADE,
    id                    uuid NOT NULL,
    platform              text NOT NULL
        CONSTRAINT platform_connections_platform_known CHECK (platform IN (
            'slack', 'google_workspace', 'microsoft_365', 'github',
            'salesforce', 'atlassian', 'zoom', 'dropbox')),
    platform_user_id      text NOT NULL
        CONSTRAINT platform_connections_user_length
        CHECK (char_length(platform_user_id) BETWEEN 1 AND 255),
    platform_workspace_id text NOT NULL DEFAULT ''
        CONSTRAINT platform_connections_workspace_length
        CHECK (char_length(platform_workspace_id) <= 255),
    display_name          text NOT NULL
        CONSTRAINT platform_connections_name_length
        CHECK (char_length(display_name) BETWEEN 1 AND 200),
    permissions_granted   text[] NOT NULL DEFAULT '{}',
    metadata              jsonb NOT NULL DEFAULT '{}'
        CONSTRAINT platform_connections_metadata_object CHECK (jsonb_typeof(metadata) = 'object'),
    status                text NOT NULL DEFAULT 'active'
        CONSTRAINT platform_connections_status_known
        CHECK (status IN ('active', 'inactive', 'error', 'expired', 'revoked')),
    status_reason         text NOT NULL DEFAULT '',
    last_sync_at          timestamptz,
    create_request_id     uuid,
    version               bigint NOT NULL DEFAULT 1,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    -- (organization_id, id) rather than id alone: tenant tables reference each
    -- other through composite keys, so a row can never point into another tenant,
    -- and the table can later be distributed by organization_id.
    PRIMARY KEY (organization_id, id),
    CONSTRAINT platform_connections_account_key
        UNIQUE (organization_id, platform, platform_workspace_id, platform_user_id),
    CONSTRAINT platform_connections_request_key UNIQUE (organization_id, create_request_id)
);
-- ListConnections without a status filter: keyset ORDER BY created_at DESC, id DESC.
CREATE INDEX platform_connections_list_idx
    ON singura.platform_connections (organization_id, created_at DESC, id DESC);
-- ListConnections filtered by status (the common "show me what is broken" query).
CREATE INDEX platform_connections_status_list_idx
    ON singura.platform_connections (organization_id, status, created_at DESC, id DESC);
-- The plan-limit check counts ACTIVE connections of one organization on every create.
CREATE INDEX platform_connections_active_idx
    ON singura.platform_connections (organization_id) WHERE status = 'active';

CREATE TRIGGER platform_connections_touch BEFORE UPDATE ON singura.platform_connections
    FOR EACH ROW EXECUTE FUNCTION singura.touch_row();

-- Credentials are written by the credential path (a later migration adds its keys
-- and indexes). Immutable design: a new secret is a new version row; an existing
-- row only ever changes its state.
CREATE TABLE singura.encrypted_credentials (
    organization_id  uuid NOT NULL,
    id               uuid NOT NULL,
    connection_id    uuid NOT NULL,
    credential_type  text NOT NULL
        CONSTRAINT encrypted_credentials_type_known CHECK (credential_type IN (
            'access_token', 'refresh_token', 'api_key', 'client_secret',
            'webhook_secret', 'private_key')),
    version          integer NOT NULL CONSTRAINT encrypted_credentials_version_positive
        CHECK (version >= 1),
    state            text NOT NULL DEFAULT 'active'
        CONSTRAINT encrypted_credentials_state_known
        CHECK (state IN ('active', 'superseded', 'revoked')),
    -- AES-256-GCM output (ciphertext || 16-byte tag) and its 96-bit nonce.
    ciphertext       bytea NOT NULL,
    nonce            bytea NOT NULL
        CONSTRAINT encrypted_credentials_nonce_length CHECK (octet_length(nonce) = 12),
    -- Which data-key version encrypted this row (rotation support).
    key_version      integer NOT NULL,
    expires_at       timestamptz,
    create_request_id uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    state_changed_at timestamptz,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, connection_id)
        REFERENCES singura.platform_connections (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT encrypted_credentials_version_key
        UNIQUE (organization_id, connection_id, credential_type, version)
);

-- Audit events. Later migrations add the hash chain's triggers and the retention
-- job; the columns are here from the start so no event is ever recorded without them.
CREATE TABLE singura.audit_logs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- NULL for system events that belong to no tenant. No foreign key: the trail
    -- must outlive the rows it describes.
    organization_id uuid,
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    actor           text NOT NULL,
    action          text NOT NULL
        CONSTRAINT audit_logs_action_format CHECK (action ~ '^[a-z_]+(\.[a-z_]+)+$'),
    resource_type   text NOT NULL,
    resource_id     text,
    request_id      text,
    outcome         text NOT NULL DEFAULT 'success'
        CONSTRAINT audit_logs_outcome_known CHECK (outcome IN ('success', 'failure', 'denied')),
    details         jsonb NOT NULL DEFAULT '{}',
    prev_hash       bytea,
    hash            bytea
);
-- Reading one organization's trail, newest first (keyset on id).
CREATE INDEX audit_logs_org_idx ON singura.audit_logs (organization_id, id DESC);

-- Row-level security: ENABLEd and FORCEd, so even the table owner is subject to it.
ALTER TABLE singura.organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE singura.organizations FORCE ROW LEVEL SECURITY;
CREATE POLICY organizations_read ON singura.organizations FOR SELECT
    USING (id = singura.current_organization_id() OR singura.is_admin_scope());
CREATE POLICY organizations_create ON singura.organizations FOR INSERT
    WITH CHECK (id = singura.current_organization_id() OR singura.is_admin_scope());
CREATE POLICY organizations_update ON singura.organizations FOR UPDATE
    USING (id = singura.current_organization_id())
    WITH CHECK (id = singura.current_organization_id());
CREATE POLICY organizations_delete ON singura.organizations FOR DELETE
    USING (id = singura.current_organization_id());

ALTER TABLE singura.platform_connections ENABLE ROW LEVEL SECURITY;
ALTER TABLE singura.platform_connections FORCE ROW LEVEL SECURITY;
CREATE POLICY platform_connections_tenant ON singura.platform_connections
    USING (organization_id = singura.current_organization_id())
    WITH CHECK (organization_id = singura.current_organization_id());

ALTER TABLE singura.encrypted_credentials ENABLE ROW LEVEL SECURITY;
ALTER TABLE singura.encrypted_credentials FORCE ROW LEVEL SECURITY;
CREATE POLICY encrypted_credentials_tenant ON singura.encrypted_credentials
    USING (organization_id = singura.current_organization_id())
    WITH CHECK (organization_id = singura.current_organization_id());

ALTER TABLE singura.audit_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE singura.audit_logs FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_logs_read ON singura.audit_logs FOR SELECT
    USING (organization_id = singura.current_organization_id());
CREATE POLICY audit_logs_append ON singura.audit_logs FOR INSERT
    WITH CHECK (organization_id = singura.current_organization_id()
                OR (organization_id IS NULL AND singura.is_admin_scope()));

-- The service role's privileges: nothing more than its queries need. The audit
-- log is append-only for it (no UPDATE, DELETE or TRUNCATE).
GRANT SELECT ON singura.plans TO singura_app;
-- The vault checks at start that the schema is current.
GRANT SELECT ON singura.schema_migrations TO singura_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON singura.organizations TO singura_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON singura.platform_connections TO singura_app;
GRANT SELECT, INSERT, UPDATE ON singura.encrypted_credentials TO singura_app;
GRANT SELECT, INSERT ON singura.audit_logs TO singura_app;
GRANT EXECUTE ON FUNCTION singura.current_organization_id() TO singura_app;
GRANT EXECUTE ON FUNCTION singura.is_admin_scope() TO singura_app;
