-- 031_organization_key_providers: customer-managed keys per organization (issue #29,
-- item 5). An organization may have its data keys wrapped by a root key of its own, in
-- its own OpenBao/Vault transit engine (docs/customer-managed-keys.md).
--
-- A provider row is immutable once written except for cleared_at and the wrapping of
-- its token's key (RotateRootKey rewraps it under the new global primary, as it does
-- data keys; the token itself never changes): a new SetOrganizationKeyProvider writes
-- a new row (and clears the previous one), so a vault process may keep what it built
-- from a row for as long as it runs. Its token is
-- sealed by the vault under the GLOBAL root key (token_wrapped_key wraps the key that
-- encrypted token_ciphertext, both bound to the row's id and organization); nothing in
-- this database can read it. Data keys it wraps name it in data_keys.root_key_id as
-- 'org-transit:<provider id>:v<N>', so a read never has to guess which root key to ask.
--
-- Moving an organization's data keys between the global root key and its own (and
-- back) is a migration row: its progress is the data_keys rows themselves (each one
-- moved in its own short transaction, locked with SKIP LOCKED so several processes
-- share the work) plus the counters here, so a killed process leaves it to be resumed.

CREATE TABLE singura.organization_key_providers (
    id                uuid PRIMARY KEY,
    organization_id   uuid NOT NULL REFERENCES singura.organizations (id) ON DELETE CASCADE,
    -- scheme://host:port, as validated by the vault; never with user information.
    address           text NOT NULL,
    mount             text NOT NULL,
    key_name          text NOT NULL,
    token_root_key_id text NOT NULL,
    token_wrapped_key bytea NOT NULL,
    token_nonce       bytea NOT NULL,
    token_ciphertext  bytea NOT NULL,
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    cleared_at        timestamptz,
    cleared_by        text
);
-- At most one provider in force per organization.
CREATE UNIQUE INDEX organization_key_providers_in_force
    ON singura.organization_key_providers (organization_id) WHERE cleared_at IS NULL;

CREATE TABLE singura.organization_key_migrations (
    id                 uuid PRIMARY KEY,
    organization_id    uuid NOT NULL REFERENCES singura.organizations (id) ON DELETE CASCADE,
    -- Where the data keys go: that provider's key, or NULL for the global root key.
    target_provider_id uuid REFERENCES singura.organization_key_providers (id)
                           ON DELETE CASCADE,
    state              text NOT NULL DEFAULT 'running'
        CONSTRAINT organization_key_migrations_state_known
            CHECK (state IN ('running', 'completed', 'superseded')),
    total              integer NOT NULL CONSTRAINT organization_key_migrations_total
                           CHECK (total >= 0),
    done               integer NOT NULL DEFAULT 0 CONSTRAINT organization_key_migrations_done
                           CHECK (done >= 0),
    started_by         text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz
);
-- At most one running migration per organization; the worker's pick.
CREATE UNIQUE INDEX organization_key_migrations_running
    ON singura.organization_key_migrations (organization_id) WHERE state = 'running';
CREATE INDEX organization_key_migrations_latest
    ON singura.organization_key_migrations (organization_id, created_at DESC);

-- Forced row-level security like every tenant table: an organization's own rows only.
-- Admin scope (an admin key, or a worker with no caller) may list running migrations
-- of every organization to work on them; it changes them in the organization's scope.
ALTER TABLE singura.organization_key_providers ENABLE ROW LEVEL SECURITY;
ALTER TABLE singura.organization_key_providers FORCE ROW LEVEL SECURITY;
CREATE POLICY organization_key_providers_tenant ON singura.organization_key_providers
    USING (organization_id = singura.current_organization_id())
    WITH CHECK (organization_id = singura.current_organization_id());
-- A root-key rotation (admin scope) rewraps every row's token key; RetireRootKey counts
-- the rows a global root key still wraps (as for data keys, migration 005).
CREATE POLICY organization_key_providers_admin_read ON singura.organization_key_providers
    FOR SELECT USING (singura.is_admin_scope());
CREATE POLICY organization_key_providers_admin_rewrap ON singura.organization_key_providers
    FOR UPDATE USING (singura.is_admin_scope()) WITH CHECK (singura.is_admin_scope());
GRANT SELECT, INSERT,
      UPDATE (cleared_at, cleared_by, token_root_key_id, token_wrapped_key)
    ON singura.organization_key_providers TO singura_app;

ALTER TABLE singura.organization_key_migrations ENABLE ROW LEVEL SECURITY;
ALTER TABLE singura.organization_key_migrations FORCE ROW LEVEL SECURITY;
CREATE POLICY organization_key_migrations_tenant ON singura.organization_key_migrations
    USING (organization_id = singura.current_organization_id())
    WITH CHECK (organization_id = singura.current_organization_id());
CREATE POLICY organization_key_migrations_admin_read ON singura.organization_key_migrations
    FOR SELECT USING (singura.is_admin_scope());
GRANT SELECT, INSERT, UPDATE (state, done, total, updated_at, finished_at)
    ON singura.organization_key_migrations TO singura_app;

-- Audit and events, in the transaction of the change. Never a token or ciphertext:
-- ids, the address, mount and key name, counts and times.
CREATE FUNCTION singura.organization_key_provider_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
DECLARE
    v_change text := CASE WHEN TG_OP = 'INSERT' THEN 'set' ELSE 'cleared' END;
    v_data jsonb := jsonb_build_object(
        'provider_id', NEW.id, 'address', NEW.address, 'mount', NEW.mount,
        'key_name', NEW.key_name, 'change', v_change,
        'change_time', coalesce(NEW.cleared_at, NEW.created_at));
BEGIN
    IF TG_OP = 'UPDATE' AND (OLD.cleared_at IS NOT NULL OR NEW.cleared_at IS NULL) THEN
        RETURN NULL;
    END IF;
    INSERT INTO singura.audit_logs (organization_id, actor, action, resource_type, resource_id,
                                    request_id, outcome, details)
    VALUES (NEW.organization_id,
            coalesce(nullif(current_setting('singura.actor', true), ''), 'system'),
            'organization_key_provider.' || v_change, 'organization_key_provider',
            NEW.id::text, nullif(current_setting('singura.request_id', true), ''),
            'success', v_data);
    PERFORM singura.event_append(NEW.organization_id, 'key.organization_provider_changed',
                                 NULL, NULL, v_data);
    RETURN NULL;
END
$$;
CREATE TRIGGER organization_key_providers_changes
    AFTER INSERT OR UPDATE OF cleared_at ON singura.organization_key_providers
    FOR EACH ROW EXECUTE FUNCTION singura.organization_key_provider_change();

CREATE FUNCTION singura.organization_key_migration_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
DECLARE
    v_action text;
    v_data jsonb := jsonb_build_object(
        'migration_id', NEW.id,
        'target', coalesce('org-transit:' || NEW.target_provider_id::text, 'global'),
        'total', NEW.total, 'done', NEW.done, 'state', NEW.state);
BEGIN
    IF TG_OP = 'INSERT' THEN
        v_action := 'organization_key_migration.started';
    ELSIF NEW.state IS DISTINCT FROM OLD.state THEN
        v_action := 'organization_key_migration.' || NEW.state;
    ELSIF NEW.done IS DISTINCT FROM OLD.done THEN
        v_action := 'organization_key_migration.progress';
    ELSE
        RETURN NULL;
    END IF;
    INSERT INTO singura.audit_logs (organization_id, actor, action, resource_type, resource_id,
                                    request_id, outcome, details)
    VALUES (NEW.organization_id,
            coalesce(nullif(current_setting('singura.actor', true), ''), 'system'),
            v_action, 'organization_key_migration', NEW.id::text,
            nullif(current_setting('singura.request_id', true), ''), 'success', v_data);
    IF TG_OP = 'UPDATE' AND NEW.state = 'completed' AND OLD.state = 'running' THEN
        PERFORM singura.event_append(
            NEW.organization_id, 'key.organization_keys_migrated', NULL, NULL,
            v_data || jsonb_build_object('finish_time', NEW.finished_at));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER organization_key_migrations_changes
    AFTER INSERT OR UPDATE OF state, done ON singura.organization_key_migrations
    FOR EACH ROW EXECUTE FUNCTION singura.organization_key_migration_change();
