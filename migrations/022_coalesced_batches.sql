-- 022_coalesced_batches: one statement for the database work of several concurrent calls.
--
-- A unary call's cost is mostly per statement and per commit, not per row
-- (BatchRevealCredentials costs a tenth of a RevealCredential per credential). The
-- vault now coalesces the work of concurrent calls (singura_vault/db/coalesce.py): the
-- calls that arrive while a statement is in flight go together in the next one. These
-- functions are those statements.
--
-- Isolation is unchanged. Each item carries the scope its own request would have
-- entered (migration 013's setting, value, actor and request id; for an organization
-- key always its own organization), and the function enters that scope -- the same
-- singura.enter_scope, transaction-scoped -- before it touches that item's rows. Items
-- are grouped by scope; each group's query runs under its scope alone, so the forced
-- row-level security policies see one organization at a time, exactly as for a call
-- of its own: an item can reach nothing its request could not have reached alone,
-- even if the vault put it in a batch with another organization's items. No policy
-- changes. (docs/threat-model.md, "Coalesced statements".)
--
-- They are SECURITY INVOKER (the default), like every scoped function, and read
-- arrays of equal length: p_settings[i], p_values[i], p_actors[i] and p_request_ids[i]
-- are item i's scope. Rows name their item in `ord` (1-based).

-- The items' scopes, grouped: each distinct (setting, value) once, with its items'
-- indexes. Reads run once per group; actor and request id do not matter to a read.
CREATE FUNCTION singura.batch_scope_groups(p_settings text[], p_values text[])
RETURNS TABLE (setting text, value text, items integer[])
    LANGUAGE sql IMMUTABLE
    AS $$
SELECT s.setting, s.value, array_agg(s.i::integer ORDER BY s.i)
  FROM unnest(p_settings, p_values) WITH ORDINALITY AS s(setting, value, i)
 GROUP BY s.setting, s.value;
$$;

-- RevealCredential (and GetAccessToken's fresh path): for each item, the named version
-- of (connection, type) or (0) the newest, with its ciphertext and wrapped data key --
-- credential_for_reveal_scoped's columns, for many requests at once.
CREATE FUNCTION singura.credential_for_reveal_batch(
    p_settings text[], p_values text[], p_actors text[], p_request_ids text[],
    p_orgs uuid[], p_connections uuid[], p_types text[], p_versions integer[])
RETURNS TABLE (ord integer, id uuid, organization_id uuid, connection_id uuid,
               credential_type text, version integer, state text, key_version integer,
               fingerprint text, created_at timestamptz, expires_at timestamptz,
               state_changed_at timestamptz, ciphertext bytea, nonce bytea,
               root_key_id text, wrapped_key bytea)
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
               e.state_changed_at, e.ciphertext, e.nonce, d.root_key_id, d.wrapped_key
          FROM unnest(g.items) AS t(i)
          CROSS JOIN LATERAL (
                SELECT * FROM singura.encrypted_credentials c
                 WHERE c.organization_id = p_orgs[t.i]
                   AND c.connection_id = p_connections[t.i]
                   AND c.credential_type = p_types[t.i]
                   AND (p_versions[t.i] = 0 OR c.version = p_versions[t.i])
                 ORDER BY c.version DESC
                 LIMIT 1) e
          JOIN singura.data_keys d
            ON d.organization_id = e.organization_id AND d.version = e.key_version;
    END LOOP;
END
$$;

-- GetCredential: each item's credential metadata (credential_get_scoped's columns).
CREATE FUNCTION singura.credential_get_batch(
    p_settings text[], p_values text[], p_actors text[], p_request_ids text[],
    p_orgs uuid[], p_ids uuid[])
RETURNS TABLE (ord integer, id uuid, organization_id uuid, connection_id uuid,
               credential_type text, version integer, state text, key_version integer,
               fingerprint text, created_at timestamptz, expires_at timestamptz,
               state_changed_at timestamptz)
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
               m.state_changed_at
          FROM unnest(g.items) AS t(i)
          JOIN singura.credential_metadata m
            ON m.organization_id = p_orgs[t.i] AND m.id = p_ids[t.i];
    END LOOP;
END
$$;

-- Audit events the service writes itself (reveals), for many requests at once: event i
-- belongs to scope i and is recorded with that request's actor and request id. One
-- INSERT per scope; committed when the statement returns (audit-or-fail for every
-- call of the batch: none of them returns a value before this commits).
CREATE FUNCTION singura.audit_append_batch(
    p_settings text[], p_values text[], p_actors text[], p_request_ids text[],
    p_orgs uuid[], p_actions text[], p_resource_types text[], p_resource_ids text[],
    p_outcomes text[], p_details jsonb[])
RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT s.setting, s.value, s.actor, s.request_id,
                    array_agg(s.i::integer ORDER BY s.i) AS items
               FROM unnest(p_settings, p_values, p_actors, p_request_ids) WITH ORDINALITY
                    AS s(setting, value, actor, request_id, i)
              GROUP BY s.setting, s.value, s.actor, s.request_id
              ORDER BY min(s.i) LOOP
        PERFORM singura.enter_scope(g.setting, g.value, g.actor, g.request_id);
        INSERT INTO singura.audit_logs (organization_id, actor, action, resource_type,
                                        resource_id, request_id, outcome, details)
        SELECT p_orgs[t.i], g.actor, p_actions[t.i], p_resource_types[t.i],
               p_resource_ids[t.i], nullif(g.request_id, ''), p_outcomes[t.i], p_details[t.i]
          FROM unnest(g.items) AS t(i)
         ORDER BY t.i;
    END LOOP;
END
$$;

-- StoreCredential's first statement (credential_store_plan_scoped), for many requests.
CREATE FUNCTION singura.credential_store_plan_batch(
    p_settings text[], p_values text[], p_actors text[], p_request_ids text[],
    p_orgs uuid[], p_connections uuid[], p_types text[], p_create_request_ids uuid[])
RETURNS TABLE (ord integer, connection_found boolean, last_version integer,
               existing_id uuid, key_version integer, root_key_id text, wrapped_key bytea)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan
    AS $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT * FROM singura.batch_scope_groups(p_settings, p_values) LOOP
        PERFORM singura.enter_scope(g.setting, g.value, '', '');
        RETURN QUERY
        SELECT t.i,
               EXISTS (SELECT 1 FROM singura.platform_connections c
                        WHERE c.organization_id = p_orgs[t.i] AND c.id = p_connections[t.i]),
               (SELECT coalesce(max(e.version), 0) FROM singura.encrypted_credentials e
                 WHERE e.organization_id = p_orgs[t.i] AND e.connection_id = p_connections[t.i]
                   AND e.credential_type = p_types[t.i]),
               (SELECT e.id FROM singura.encrypted_credentials e
                 WHERE e.organization_id = p_orgs[t.i]
                   AND e.create_request_id = p_create_request_ids[t.i]),
               k.version, k.root_key_id, k.wrapped_key
          FROM unnest(g.items) AS t(i)
          LEFT JOIN LATERAL (
                SELECT d.version, d.root_key_id, d.wrapped_key FROM singura.data_keys d
                 WHERE d.organization_id = p_orgs[t.i] AND d.state = 'active'
                 ORDER BY d.version DESC
                 LIMIT 1) k ON true;
    END LOOP;
END
$$;

-- StoreCredential's second statement (credential_store_scoped), for many requests, in
-- one transaction. Each item enters its own scope (its actor and request id are what
-- the credential's audit trigger records) and runs in its own subtransaction: an item
-- that loses a race (its version or request id taken, its data key retired, its
-- connection deleted) is rolled back alone and reported by the name of the constraint
-- it hit, in `failed`; the vault then plans that call again, or does it on its own as
-- before this migration, which gives it exactly the outcome it had then. Several stores
-- of one credential in one plan batch get consecutive versions (the vault numbers them),
-- and each lands only on top of its predecessor. The vault sends items in
-- (organization, connection, type, version) order, so two batches lock connection rows
-- in the same order and one batch lands a credential's versions in order. Batches are
-- capped below 64 items, PostgreSQL's per-backend cache of subtransaction ids.
CREATE FUNCTION singura.credential_store_batch(
    p_settings text[], p_values text[], p_actors text[], p_request_ids text[],
    p_orgs uuid[], p_ids uuid[], p_connections uuid[], p_types text[], p_versions integer[],
    p_ciphertexts bytea[], p_nonces bytea[], p_key_versions integer[],
    p_fingerprints text[], p_expires_ats timestamptz[], p_create_request_ids uuid[])
RETURNS TABLE (ord integer, failed text, id uuid, organization_id uuid,
               connection_id uuid, credential_type text, version integer, state text,
               key_version integer, fingerprint text, created_at timestamptz,
               expires_at timestamptz, state_changed_at timestamptz)
    LANGUAGE plpgsql
    AS $$
DECLARE
    i integer;
    v_constraint text;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_orgs, 1), 0) LOOP
        BEGIN
            PERFORM singura.enter_scope(p_settings[i], p_values[i], p_actors[i],
                                        p_request_ids[i]);
            PERFORM 1 FROM singura.platform_connections c
              WHERE c.organization_id = p_orgs[i] AND c.id = p_connections[i]
                FOR NO KEY UPDATE;
            -- Stores of one credential planned in one batch got consecutive versions;
            -- one whose predecessor has not landed (it lost a race, or is in a later
            -- batch) must not become current over it: it plans again, like a version
            -- taken.
            IF p_versions[i] <> 1 + (SELECT coalesce(max(e.version), 0)
                                       FROM singura.encrypted_credentials e
                                      WHERE e.organization_id = p_orgs[i]
                                        AND e.connection_id = p_connections[i]
                                        AND e.credential_type = p_types[i]) THEN
                RAISE EXCEPTION 'version % is not the next one', p_versions[i]
                    USING ERRCODE = 'unique_violation',
                          CONSTRAINT = 'encrypted_credentials_version_key';
            END IF;
            UPDATE singura.encrypted_credentials e
               SET state = 'superseded', state_changed_at = now()
             WHERE e.organization_id = p_orgs[i] AND e.connection_id = p_connections[i]
               AND e.credential_type = p_types[i] AND e.state = 'active';
            RETURN QUERY
            INSERT INTO singura.encrypted_credentials AS e (
                organization_id, id, connection_id, credential_type, version, state,
                ciphertext, nonce, key_version, fingerprint, expires_at, create_request_id)
            VALUES (p_orgs[i], p_ids[i], p_connections[i], p_types[i], p_versions[i],
                    'active', p_ciphertexts[i], p_nonces[i], p_key_versions[i],
                    p_fingerprints[i], p_expires_ats[i], p_create_request_ids[i])
            RETURNING i, NULL::text, e.id, e.organization_id, e.connection_id,
                      e.credential_type, e.version, e.state, e.key_version, e.fingerprint,
                      e.created_at, e.expires_at, e.state_changed_at;
        EXCEPTION WHEN unique_violation OR check_violation OR foreign_key_violation THEN
            GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME;
            ord := i;
            failed := v_constraint;
            id := NULL; organization_id := NULL; connection_id := NULL;
            credential_type := NULL; version := NULL; state := NULL; key_version := NULL;
            fingerprint := NULL; created_at := NULL; expires_at := NULL;
            state_changed_at := NULL;
            RETURN NEXT;
        END;
    END LOOP;
END
$$;

GRANT EXECUTE ON FUNCTION
    singura.batch_scope_groups(text[], text[]),
    singura.credential_for_reveal_batch(text[], text[], text[], text[], uuid[], uuid[], text[],
                                        integer[]),
    singura.credential_get_batch(text[], text[], text[], text[], uuid[], uuid[]),
    singura.audit_append_batch(text[], text[], text[], text[], uuid[], text[], text[], text[],
                               text[], jsonb[]),
    singura.credential_store_plan_batch(text[], text[], text[], text[], uuid[], uuid[], text[],
                                        uuid[]),
    singura.credential_store_batch(text[], text[], text[], text[], uuid[], uuid[], uuid[],
                                   text[], integer[], bytea[], bytea[], integer[], text[],
                                   timestamptz[], uuid[])
    TO singura_app;
