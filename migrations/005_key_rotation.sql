-- 005_key_rotation: root-key rotation, data-key rotation and durable rewrap jobs.

-- Root-key rotation rewraps every organization's data keys in one transaction, so
-- admin scope may read and update data_keys rows. They hold only *wrapped* keys,
-- useless without the root key; credentials stay tenant-only.
CREATE POLICY data_keys_admin_read ON singura.data_keys FOR SELECT
    USING (singura.is_admin_scope());
CREATE POLICY data_keys_admin_rewrap ON singura.data_keys FOR UPDATE
    USING (singura.is_admin_scope()) WITH CHECK (singura.is_admin_scope());

-- A rewrap job re-encrypts every credential whose data key version is not its
-- organization's newest. Any number of vault processes work on the running job;
-- each batch is claimed with FOR UPDATE SKIP LOCKED and committed with its count.
CREATE TABLE singura.rewrap_jobs (
    id          uuid PRIMARY KEY,
    state       text NOT NULL DEFAULT 'running'
        CONSTRAINT rewrap_jobs_state_known CHECK (state IN ('running', 'completed', 'cancelled')),
    total       bigint NOT NULL DEFAULT 0,
    done        bigint NOT NULL DEFAULT 0,
    started_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
-- At most one running job (StartRewrap returns it instead of starting another).
CREATE UNIQUE INDEX rewrap_jobs_one_running ON singura.rewrap_jobs ((true))
    WHERE state = 'running';
-- GetKeyStatus: the latest job.
CREATE INDEX rewrap_jobs_created_idx ON singura.rewrap_jobs (created_at DESC);
-- Not tenant data (ids and counts only): no row-level security.
GRANT SELECT, INSERT, UPDATE ON singura.rewrap_jobs TO singura_app;

-- The rewrap worker claims stale credentials per organization.
CREATE INDEX encrypted_credentials_key_version_idx
    ON singura.encrypted_credentials (organization_id, key_version)
    WHERE state <> 'revoked';

-- A re-encryption is recorded as credential.rewrapped (not a generic update).
CREATE OR REPLACE FUNCTION singura.audit_rewrap_action() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
BEGIN
    INSERT INTO singura.audit_logs (organization_id, actor, action, resource_type, resource_id,
                                    request_id, outcome, details)
    VALUES (NEW.organization_id,
            coalesce(nullif(current_setting('singura.actor', true), ''), 'system'),
            'credential.rewrapped', 'credential', NEW.id::text,
            nullif(current_setting('singura.request_id', true), ''), 'success',
            jsonb_build_object('connection_id', NEW.connection_id,
                               'credential_type', NEW.credential_type,
                               'version', NEW.version,
                               'old_key_version', OLD.key_version,
                               'key_version', NEW.key_version));
    RETURN NULL;
END
$$;
-- The generic trigger must not also record these rows: it now skips updates
-- that only re-encrypt, and this one records them.
DROP TRIGGER encrypted_credentials_audit ON singura.encrypted_credentials;
CREATE TRIGGER encrypted_credentials_audit
    AFTER INSERT OR DELETE OR UPDATE OF state ON singura.encrypted_credentials
    FOR EACH ROW EXECUTE FUNCTION singura.audit_row_change('credential');
CREATE TRIGGER encrypted_credentials_rewrap_audit
    AFTER UPDATE OF key_version ON singura.encrypted_credentials
    FOR EACH ROW WHEN (OLD.key_version IS DISTINCT FROM NEW.key_version)
    EXECUTE FUNCTION singura.audit_rewrap_action();
