-- 029_version_states: version states with delayed destruction (issue #29, item 1).
--
-- Two states describe a credential version, and they answer different questions:
--
-- * `state` (since 001): where the version stands in its credential's history --
--   active (the newest stored), superseded (a newer one was stored) or revoked (its
--   ciphertext destroyed by RevokeCredential). Stores and revocations change it.
-- * `version_state` (new): whether the version may be used -- enabled, disabled or
--   destroyed (GCP Secret Manager's version states, Vault KV v2's delete/destroy).
--   DisableCredentialVersion, EnableCredentialVersion, DestroyCredentialVersion,
--   CancelCredentialDestroy and the destruction job change it; a store never does.
--
-- DestroyCredentialVersion does not erase at once: it sets `destroy_at` (now +
-- SINGURA_DESTROY_DELAY). Until then the version is unusable (the API reports it
-- DISABLED with its destroy_time, derived like EXPIRED is) and
-- CancelCredentialDestroy clears `destroy_at`, which gives back the state it had
-- (enabled or disabled). Once `destroy_at` has passed, the job of any vault process
-- (singura.credential_destroy_due) erases ciphertext and nonce for good and sets
-- version_state = destroyed; the row keeps its metadata and its audit trail.
--
-- "The current version" (a reveal of version 0, GetAccessToken, a batch item of
-- version 0, the refresh) is the newest version that is enabled and not scheduled
-- for destruction; disabled ones are skipped. Only when none is left is the newest
-- version read, and refused for its state.
--
-- Every transition is audited (credential.version_*) and emits the event of the same
-- type, both by trigger in the transaction that makes it.

ALTER TABLE singura.encrypted_credentials
    ADD COLUMN version_state text NOT NULL DEFAULT 'enabled'
        CONSTRAINT encrypted_credentials_version_state_known
        CHECK (version_state IN ('enabled', 'disabled', 'destroyed')),
    -- When the version is (or was) to be destroyed; NULL unless scheduled or destroyed.
    ADD COLUMN destroy_at timestamptz,
    ADD CONSTRAINT encrypted_credentials_destroyed_was_scheduled
        CHECK (version_state <> 'destroyed' OR destroy_at IS NOT NULL);

-- A destroyed version has no ciphertext, like a revoked one; every other one has.
ALTER TABLE singura.encrypted_credentials
    DROP CONSTRAINT encrypted_credentials_revoked_has_no_ciphertext;
ALTER TABLE singura.encrypted_credentials
    ADD CONSTRAINT encrypted_credentials_erased_has_no_ciphertext
    CHECK ((state = 'revoked' OR version_state = 'destroyed') = (ciphertext IS NULL)
           AND (ciphertext IS NULL) = (nonce IS NULL));

-- The destruction job's work: versions whose destruction is scheduled and not done.
CREATE INDEX encrypted_credentials_destroy_due_idx
    ON singura.encrypted_credentials (destroy_at)
    WHERE destroy_at IS NOT NULL AND version_state <> 'destroyed';

-- The metadata every read returns gains the two columns (at the end: a view may only
-- grow there).
CREATE OR REPLACE VIEW singura.credential_metadata WITH (security_invoker = true) AS
SELECT id, organization_id, connection_id, credential_type, version, state, key_version,
       fingerprint, created_at, expires_at, state_changed_at, version_state, destroy_at
  FROM singura.encrypted_credentials;

-- credential_store_scoped returns SETOF credential_metadata: its RETURNING follows.
CREATE OR REPLACE FUNCTION singura.credential_store_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text,
    p_org uuid, p_id uuid, p_connection uuid, p_type text, p_version integer,
    p_ciphertext bytea, p_nonce bytea, p_key_version integer, p_fingerprint text,
    p_expires_at timestamptz, p_create_request_id uuid)
RETURNS SETOF singura.credential_metadata
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT 1 FROM singura.platform_connections
 WHERE organization_id = p_org AND id = p_connection
   FOR NO KEY UPDATE;
UPDATE singura.encrypted_credentials
   SET state = 'superseded', state_changed_at = now()
 WHERE organization_id = p_org AND connection_id = p_connection AND credential_type = p_type
   AND state = 'active';
INSERT INTO singura.encrypted_credentials (
    organization_id, id, connection_id, credential_type, version, state,
    ciphertext, nonce, key_version, fingerprint, expires_at, create_request_id)
VALUES (p_org, p_id, p_connection, p_type, p_version, 'active', p_ciphertext, p_nonce,
        p_key_version, p_fingerprint, p_expires_at, p_create_request_id)
RETURNING id, organization_id, connection_id, credential_type, version, state, key_version,
          fingerprint, created_at, expires_at, state_changed_at, version_state, destroy_at;
$$;

-- The reveal reads (migrations 013 and 022) return the version state too, still in
-- their one statement, and version 0 means the newest usable version: the first
-- branch walks the version key backwards and stops at the first enabled version not
-- scheduled for destruction (at once, unless some were disabled); only when there is
-- none does the second branch give the newest version, which the vault then refuses
-- for its state. A named version is read whatever its state (and refused if unusable).
DROP FUNCTION singura.credential_for_reveal_batch(
    text[], text[], text[], text[], uuid[], uuid[], text[], integer[]);
CREATE FUNCTION singura.credential_for_reveal_batch(
    p_settings text[], p_values text[], p_actors text[], p_request_ids text[],
    p_orgs uuid[], p_connections uuid[], p_types text[], p_versions integer[])
RETURNS TABLE (ord integer, id uuid, organization_id uuid, connection_id uuid,
               credential_type text, version integer, state text, key_version integer,
               fingerprint text, created_at timestamptz, expires_at timestamptz,
               state_changed_at timestamptz, ciphertext bytea, nonce bytea,
               root_key_id text, wrapped_key bytea, version_state text,
               destroy_at timestamptz)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan
    AS $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT * FROM singura.batch_scope_groups(p_settings, p_values) LOOP
        PERFORM singura.enter_scope(g.setting, g.value, '', '');
        RETURN QUERY
        SELECT t.i, e.id, e.organization_id, e.connection_id, e.credential_type, e.version,
               e.state, e.key_version, e.fingerprint, e.created_at, e.expires_at,
               e.state_changed_at, e.ciphertext, e.nonce, d.root_key_id, d.wrapped_key,
               e.version_state, e.destroy_at
          FROM unnest(g.items) AS t(i)
          CROSS JOIN LATERAL (
                SELECT * FROM (
                    (SELECT * FROM singura.encrypted_credentials c
                      WHERE c.organization_id = p_orgs[t.i]
                        AND c.connection_id = p_connections[t.i]
                        AND c.credential_type = p_types[t.i]
                        AND (p_versions[t.i] = c.version
                             OR (p_versions[t.i] = 0 AND c.version_state = 'enabled'
                                 AND c.destroy_at IS NULL))
                      ORDER BY c.version DESC
                      LIMIT 1)
                    UNION ALL
                    (SELECT * FROM singura.encrypted_credentials c
                      WHERE p_versions[t.i] = 0
                        AND c.organization_id = p_orgs[t.i]
                        AND c.connection_id = p_connections[t.i]
                        AND c.credential_type = p_types[t.i]
                      ORDER BY c.version DESC
                      LIMIT 1)) newest
                 LIMIT 1) e
          JOIN singura.data_keys d
            ON d.organization_id = e.organization_id AND d.version = e.key_version;
    END LOOP;
END
$$;
GRANT EXECUTE ON FUNCTION singura.credential_for_reveal_batch(
    text[], text[], text[], text[], uuid[], uuid[], text[], integer[]) TO singura_app;

DROP FUNCTION singura.credential_for_reveal_scoped(
    text, text, text, text, uuid, uuid[], text[], integer[]);
CREATE FUNCTION singura.credential_for_reveal_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text,
    p_org uuid, p_connections uuid[], p_types text[], p_versions integer[])
RETURNS TABLE (ord bigint, id uuid, organization_id uuid, connection_id uuid,
               credential_type text, version integer, state text, key_version integer,
               fingerprint text, created_at timestamptz, expires_at timestamptz,
               state_changed_at timestamptz, ciphertext bytea, nonce bytea,
               root_key_id text, wrapped_key bytea, version_state text,
               destroy_at timestamptz)
    LANGUAGE sql
    SET plan_cache_mode = force_generic_plan
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT t.ord, e.id, e.organization_id, e.connection_id, e.credential_type, e.version,
       e.state, e.key_version, e.fingerprint, e.created_at, e.expires_at,
       e.state_changed_at, e.ciphertext, e.nonce, d.root_key_id, d.wrapped_key,
       e.version_state, e.destroy_at
  FROM unnest(p_connections, p_types, p_versions) WITH ORDINALITY
       AS t(connection_id, credential_type, version, ord)
  CROSS JOIN LATERAL (
        SELECT * FROM (
            (SELECT * FROM singura.encrypted_credentials c
              WHERE c.organization_id = p_org AND c.connection_id = t.connection_id
                AND c.credential_type = t.credential_type
                AND (t.version = c.version
                     OR (t.version = 0 AND c.version_state = 'enabled'
                         AND c.destroy_at IS NULL))
              ORDER BY c.version DESC
              LIMIT 1)
            UNION ALL
            (SELECT * FROM singura.encrypted_credentials c
              WHERE t.version = 0
                AND c.organization_id = p_org AND c.connection_id = t.connection_id
                AND c.credential_type = t.credential_type
              ORDER BY c.version DESC
              LIMIT 1)) newest
         LIMIT 1) e
  JOIN singura.data_keys d ON d.organization_id = e.organization_id AND d.version = e.key_version;
$$;
GRANT EXECUTE ON FUNCTION singura.credential_for_reveal_scoped(
    text, text, text, text, uuid, uuid[], text[], integer[]) TO singura_app;

-- GetCredential's coalesced read returns the version state too.
DROP FUNCTION singura.credential_get_batch(text[], text[], text[], text[], uuid[], uuid[]);
CREATE FUNCTION singura.credential_get_batch(
    p_settings text[], p_values text[], p_actors text[], p_request_ids text[],
    p_orgs uuid[], p_ids uuid[])
RETURNS TABLE (ord integer, id uuid, organization_id uuid, connection_id uuid,
               credential_type text, version integer, state text, key_version integer,
               fingerprint text, created_at timestamptz, expires_at timestamptz,
               state_changed_at timestamptz, version_state text, destroy_at timestamptz)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan
    AS $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT * FROM singura.batch_scope_groups(p_settings, p_values) LOOP
        PERFORM singura.enter_scope(g.setting, g.value, '', '');
        RETURN QUERY
        SELECT t.i, m.id, m.organization_id, m.connection_id, m.credential_type, m.version,
               m.state, m.key_version, m.fingerprint, m.created_at, m.expires_at,
               m.state_changed_at, m.version_state, m.destroy_at
          FROM unnest(g.items) AS t(i)
          JOIN singura.credential_metadata m
            ON m.organization_id = p_orgs[t.i] AND m.id = p_ids[t.i];
    END LOOP;
END
$$;
GRANT EXECUTE ON FUNCTION singura.credential_get_batch(
    text[], text[], text[], text[], uuid[], uuid[]) TO singura_app;

-- One transition of one version, in one round trip, under the tenant's row-level
-- security (the service role, not a definer). p_action: disable, enable, destroy
-- (p_destroy_at: when), cancel_destroy. `refused` names why nothing changed
-- (revoked, destroyed, scheduled, not_scheduled); no row: no such version.
-- Setting the state a version already has changes nothing and emits nothing.
CREATE FUNCTION singura.credential_version_change_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text,
    p_org uuid, p_connection uuid, p_type text, p_version integer, p_action text,
    p_destroy_at timestamptz)
RETURNS TABLE (refused text, id uuid, organization_id uuid, connection_id uuid,
               credential_type text, version integer, state text, key_version integer,
               fingerprint text, created_at timestamptz, expires_at timestamptz,
               state_changed_at timestamptz, version_state text, destroy_at timestamptz)
    LANGUAGE plpgsql
    AS $$
DECLARE
    r singura.encrypted_credentials;
    v_refused text;
BEGIN
    IF p_action NOT IN ('disable', 'enable', 'destroy', 'cancel_destroy') THEN
        RAISE EXCEPTION 'not a version transition: %', p_action
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
    SELECT * INTO r FROM singura.encrypted_credentials c
     WHERE c.organization_id = p_org AND c.connection_id = p_connection
       AND c.credential_type = p_type AND c.version = p_version
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    v_refused := CASE
        WHEN r.state = 'revoked' THEN 'revoked'
        WHEN r.version_state = 'destroyed' THEN 'destroyed'
        WHEN p_action = 'cancel_destroy' AND r.destroy_at IS NULL THEN 'not_scheduled'
        WHEN p_action <> 'cancel_destroy' AND r.destroy_at IS NOT NULL THEN 'scheduled'
    END;
    IF v_refused IS NULL AND NOT (p_action = 'disable' AND r.version_state = 'disabled')
       AND NOT (p_action = 'enable' AND r.version_state = 'enabled') THEN
        UPDATE singura.encrypted_credentials c
           SET version_state = CASE p_action WHEN 'disable' THEN 'disabled'
                                             WHEN 'enable' THEN 'enabled'
                                             ELSE c.version_state END,
               destroy_at = CASE p_action WHEN 'destroy' THEN p_destroy_at
                                          WHEN 'cancel_destroy' THEN NULL
                                          ELSE c.destroy_at END
         WHERE c.organization_id = p_org AND c.id = r.id
        RETURNING * INTO r;
    END IF;
    RETURN QUERY SELECT v_refused, r.id, r.organization_id, r.connection_id,
                        r.credential_type, r.version, r.state, r.key_version, r.fingerprint,
                        r.created_at, r.expires_at, r.state_changed_at, r.version_state,
                        r.destroy_at;
END
$$;
GRANT EXECUTE ON FUNCTION singura.credential_version_change_scoped(
    text, text, text, text, uuid, uuid, text, integer, text, timestamptz) TO singura_app;

-- The destruction job (service/version_destroyer.py): any vault process erases the
-- versions whose destroy_at has passed, across organizations, through this one narrow
-- door (the schema owner's, like oauth_refresh_claim). SKIP LOCKED: two processes never
-- take the same row nor wait on each other; a version whose cancellation holds its row
-- is left to the next pass, which sees it cancelled. p_now: the caller's clock.
CREATE POLICY encrypted_credentials_destroy_job ON singura.encrypted_credentials
    FOR UPDATE USING ((SELECT singura.is_schema_owner()))
    WITH CHECK ((SELECT singura.is_schema_owner()));

CREATE FUNCTION singura.credential_destroy_due(p_now timestamptz, p_limit integer)
RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'singura', 'pg_temp'
    AS $$
DECLARE
    v_count integer;
BEGIN
    WITH due AS (
        SELECT c.organization_id, c.id FROM singura.encrypted_credentials c
         WHERE c.destroy_at IS NOT NULL AND c.version_state <> 'destroyed'
           AND c.destroy_at <= p_now
         ORDER BY c.destroy_at
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    )
    UPDATE singura.encrypted_credentials c
       SET version_state = 'destroyed', ciphertext = NULL, nonce = NULL
      FROM due
     WHERE c.organization_id = due.organization_id AND c.id = due.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
REVOKE ALL ON FUNCTION singura.credential_destroy_due(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION singura.credential_destroy_due(timestamptz, integer) TO singura_app;

-- The type of a version-state transition (NULL: none), for the audit and event triggers.
CREATE FUNCTION singura.credential_version_transition(
    p_old singura.encrypted_credentials, p_new singura.encrypted_credentials) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
SELECT CASE
    WHEN p_new.version_state = 'destroyed' AND p_old.version_state <> 'destroyed'
        THEN 'credential.version_destroyed'
    WHEN p_old.destroy_at IS NULL AND p_new.destroy_at IS NOT NULL
        THEN 'credential.version_destroy_scheduled'
    WHEN p_old.destroy_at IS NOT NULL AND p_new.destroy_at IS NULL
        THEN 'credential.version_destroy_cancelled'
    WHEN p_old.version_state = 'enabled' AND p_new.version_state = 'disabled'
        THEN 'credential.version_disabled'
    WHEN p_old.version_state = 'disabled' AND p_new.version_state = 'enabled'
        THEN 'credential.version_enabled'
END
$$;

-- Audit and event of one transition, in its transaction. Ids, versions, states and
-- times only: never the ciphertext, nonce or fingerprint.
CREATE FUNCTION singura.credential_version_changed() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
DECLARE
    v_type text := singura.credential_version_transition(OLD, NEW);
    v_data jsonb;
BEGIN
    IF v_type IS NULL THEN
        RETURN NULL;
    END IF;
    v_data := jsonb_build_object(
        'connection_id', NEW.connection_id, 'credential_type', NEW.credential_type,
        'version', NEW.version, 'key_version', NEW.key_version,
        'version_state', CASE WHEN NEW.version_state = 'enabled' AND NEW.destroy_at IS NOT NULL
                              THEN 'disabled' ELSE NEW.version_state END,
        'destroy_time', NEW.destroy_at, 'change_time', now());
    INSERT INTO singura.audit_logs (organization_id, actor, action, resource_type, resource_id,
                                    request_id, outcome, details)
    VALUES (NEW.organization_id,
            coalesce(nullif(current_setting('singura.actor', true), ''), 'system'),
            v_type, 'credential', NEW.id::text,
            nullif(current_setting('singura.request_id', true), ''),
            'success', v_data);
    PERFORM singura.event_append(NEW.organization_id, v_type, NEW.connection_id, NEW.id,
                                 v_data - 'connection_id' - 'key_version');
    RETURN NULL;
END
$$;
CREATE TRIGGER encrypted_credentials_version_state
    AFTER UPDATE OF version_state, destroy_at ON singura.encrypted_credentials
    FOR EACH ROW EXECUTE FUNCTION singura.credential_version_changed();
