-- 030_soft_deleted_connections: DeleteConnection keeps a connection recoverable (#29, item 3).
--
-- A delete without `force` marks the row (deleted_at, purge_at) and keeps it and its
-- credentials; UndeleteConnection clears the mark. While marked, the connection is left
-- out of listings unless asked for, its credentials cannot be revealed, stored or
-- refreshed (FAILED_PRECONDITION, CONNECTION_DELETED), and it does not count against the
-- plan's connection limit. After the recovery window the purge job
-- (singura.connection_purge) deletes the row: its credential rows go with it
-- (ON DELETE CASCADE), ciphertexts included -- crypto-erased in the sense that no copy is
-- left in the vault's tables. Every step is audited and emits an event, from the
-- change's own transaction.
ALTER TABLE singura.platform_connections
    ADD COLUMN deleted_at timestamptz,
    ADD COLUMN purge_at timestamptz,
    -- Whether the delete revoked the grant at the platform first (revoke_at_provider
    -- answered REVOKED): an undelete then brings back tokens the platform refuses.
    ADD COLUMN deleted_revoked_at_provider boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT platform_connections_deleted_has_purge_time
        CHECK ((deleted_at IS NULL) = (purge_at IS NULL)
               AND (deleted_at IS NOT NULL OR NOT deleted_revoked_at_provider));

-- The purge job's scan: only marked rows are in it.
CREATE INDEX platform_connections_purge_idx ON singura.platform_connections (purge_at)
    WHERE deleted_at IS NOT NULL;

-- Plan limits count live ACTIVE connections only (connection_count_active).
DROP INDEX singura.platform_connections_active_idx;
CREATE INDEX platform_connections_active_idx ON singura.platform_connections (organization_id)
    WHERE status = 'active' AND deleted_at IS NULL;

-- Get/ListConnections show the mark (new columns go last: the view's rowtype is the
-- return type of the scoped reads).
CREATE OR REPLACE VIEW singura.connection_with_refresh WITH (security_invoker = true) AS
SELECT c.organization_id, c.id, c.platform, c.platform_user_id, c.platform_workspace_id,
       c.display_name, c.permissions_granted, c.metadata, c.status, c.status_reason,
       c.last_sync_at, c.create_request_id, c.version, c.created_at, c.updated_at,
       r.last_refresh_at, coalesce(r.failure_count, 0) AS refresh_failure_count,
       coalesce(r.last_error, '') AS last_refresh_error, r.next_refresh_at,
       c.requested_scopes, r.expiry_source, c.granted_user_scopes,
       c.deleted_at, c.purge_at, c.deleted_revoked_at_provider
  FROM singura.platform_connections c
  LEFT JOIN singura.connection_refresh_state r
         ON r.organization_id = c.organization_id AND r.connection_id = c.id;

-- ListConnections: deleted connections only with p_show_deleted.
DROP FUNCTION singura.connection_list_scoped(
    text, text, text, text, uuid, text, text, timestamptz, uuid, integer, text);
CREATE FUNCTION singura.connection_list_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text,
    p_org uuid, p_platform text, p_status text, p_after_at timestamptz, p_after_id uuid,
    p_limit integer, p_scope_drift text, p_show_deleted boolean)
RETURNS SETOF singura.connection_with_refresh
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT *
  FROM singura.connection_with_refresh
 WHERE organization_id = p_org
   AND (p_show_deleted OR deleted_at IS NULL)
   AND (p_platform IS NULL OR platform = p_platform)
   AND (p_status IS NULL OR status = p_status)
   AND (p_scope_drift IS NULL OR (
        cardinality(requested_scopes) > 0
        AND CASE p_scope_drift
              WHEN 'missing' THEN NOT requested_scopes <@ permissions_granted
              WHEN 'extra' THEN NOT permissions_granted <@ requested_scopes
              WHEN 'any' THEN NOT (requested_scopes <@ permissions_granted
                                   AND permissions_granted <@ requested_scopes)
              ELSE false
            END))
   AND (p_after_at IS NULL OR (created_at, id) < (p_after_at, p_after_id))
 ORDER BY created_at DESC, id DESC
 LIMIT p_limit;
$$;
GRANT EXECUTE ON FUNCTION singura.connection_list_scoped(
    text, text, text, text, uuid, text, text, timestamptz, uuid, integer, text, boolean)
    TO singura_app;

-- Reveals: the read also says whether the credential's connection is deleted (one
-- primary-key probe in the same statement), so a refusal costs no round trip. The
-- service refuses and audits the attempt as a failed reveal. The version choice is
-- migration 029's (version 0: the newest enabled version not scheduled for
-- destruction, else the newest, refused for its state); only the last column is new.
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
               destroy_at timestamptz, connection_deleted boolean)
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
               e.version_state, e.destroy_at,
               EXISTS (SELECT 1 FROM singura.platform_connections pc
                        WHERE pc.organization_id = e.organization_id
                          AND pc.id = e.connection_id AND pc.deleted_at IS NOT NULL)
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
               destroy_at timestamptz, connection_deleted boolean)
    LANGUAGE sql
    SET plan_cache_mode = force_generic_plan
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT t.ord, e.id, e.organization_id, e.connection_id, e.credential_type, e.version,
       e.state, e.key_version, e.fingerprint, e.created_at, e.expires_at,
       e.state_changed_at, e.ciphertext, e.nonce, d.root_key_id, d.wrapped_key,
       e.version_state, e.destroy_at,
       EXISTS (SELECT 1 FROM singura.platform_connections pc
                WHERE pc.organization_id = e.organization_id
                  AND pc.id = e.connection_id AND pc.deleted_at IS NOT NULL)
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

-- Stores, on every path (StoreCredential alone or batched, its locked last attempt, a
-- refresh, the connect flow): a new version of a deleted connection's credential is
-- refused by the row itself, like a retired data key (migration 008). Each store path
-- locks the connection row (FOR NO KEY UPDATE) before it inserts, and a delete updates
-- that row, so a store and a delete of one connection take turns: the store that waited
-- sees the mark here.
CREATE FUNCTION singura.credential_connection_must_be_live() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = singura, pg_temp
    AS $$
BEGIN
    PERFORM 1 FROM singura.platform_connections
      WHERE organization_id = NEW.organization_id AND id = NEW.connection_id
        AND deleted_at IS NOT NULL;
    IF FOUND THEN
        RAISE EXCEPTION 'connection % is deleted', NEW.connection_id
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'encrypted_credentials_connection_live';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER encrypted_credentials_connection_live
    BEFORE INSERT ON singura.encrypted_credentials
    FOR EACH ROW EXECUTE FUNCTION singura.credential_connection_must_be_live();

-- ListExpiringCredentials: a deleted connection's tokens need no renewal (nothing may
-- refresh or store them); they are listed again once it is undeleted.
CREATE OR REPLACE FUNCTION singura.credential_expiring_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text,
    p_org uuid, p_before timestamptz, p_after_at timestamptz, p_after_id uuid, p_limit integer)
RETURNS SETOF singura.credential_metadata
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT *
  FROM singura.credential_metadata m
 WHERE m.organization_id = p_org AND m.state = 'active'
   AND m.expires_at IS NOT NULL AND m.expires_at < p_before
   AND (p_after_at IS NULL OR (m.expires_at, m.id) > (p_after_at, p_after_id))
   AND NOT EXISTS (SELECT 1 FROM singura.platform_connections c
                    WHERE c.organization_id = m.organization_id AND c.id = m.connection_id
                      AND c.deleted_at IS NOT NULL)
 ORDER BY m.expires_at, m.id
 LIMIT p_limit;
$$;

-- The background refresh leaves deleted connections alone.
CREATE OR REPLACE FUNCTION singura.oauth_refresh_due(p_margin interval, p_keepalive interval)
RETURNS TABLE(organization_id uuid, connection_id uuid, keepalive boolean)
    LANGUAGE sql STABLE
    SET search_path = singura, pg_temp
    AS $$
SELECT c.organization_id, c.id,
       NOT (a.id IS NULL OR a.expires_at <= now() + p_margin)
  FROM singura.platform_connections c
  JOIN singura.oauth_clients o
    ON o.organization_id = c.organization_id AND o.platform = c.platform
  JOIN singura.encrypted_credentials r
    ON r.organization_id = c.organization_id AND r.connection_id = c.id
   AND r.credential_type = 'refresh_token' AND r.state = 'active'
  LEFT JOIN singura.encrypted_credentials a
    ON a.organization_id = c.organization_id AND a.connection_id = c.id
   AND a.credential_type = 'access_token' AND a.state = 'active'
  LEFT JOIN singura.connection_refresh_state s
    ON s.organization_id = c.organization_id AND s.connection_id = c.id
 WHERE c.status = 'active' AND c.deleted_at IS NULL
   AND (s.next_refresh_at IS NULL OR s.next_refresh_at <= now())
   AND (a.id IS NULL OR a.expires_at <= now() + p_margin
        OR coalesce(s.last_refresh_at, r.created_at) <= now() - p_keepalive);
$$;

-- The purge job: delete up to p_limit connections whose recovery window ended by
-- p_now (the caller's clock), across organizations, each under its own tenant scope so
-- that row-level security still fences the delete (the schema owner may only *read*
-- every organization's connections: migration 016's refresh-worker policy). The
-- connection's credentials and refresh state cascade. A concurrent undelete wins if it
-- commits first (the DELETE re-checks the mark on the row it waited for); two vault
-- processes purging at once delete each row once. Returns what it deleted.
-- p_now is trusted: the service role may call this with any time, which lets it purge
-- deleted connections early -- no more than it can already do (enter a tenant's scope and
-- delete that tenant's connections), and every purge is audited.
CREATE FUNCTION singura.connection_purge(p_now timestamptz, p_limit integer)
RETURNS TABLE(organization_id uuid, connection_id uuid)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
DECLARE
    due record;
BEGIN
    PERFORM set_config('singura.actor', 'system', true),
            set_config('singura.request_id', '', true);
    FOR due IN
        SELECT c.organization_id AS org, c.id
          FROM singura.platform_connections c
         WHERE c.deleted_at IS NOT NULL AND c.purge_at <= p_now
         ORDER BY c.purge_at
         LIMIT p_limit
    LOOP
        PERFORM set_config('singura.organization_id', due.org::text, true);
        RETURN QUERY
        DELETE FROM singura.platform_connections c
         WHERE c.organization_id = due.org AND c.id = due.id
           AND c.deleted_at IS NOT NULL AND c.purge_at <= p_now
        RETURNING c.organization_id, c.id;
    END LOOP;
    PERFORM set_config('singura.organization_id', '', true);
END
$$;
REVOKE ALL ON FUNCTION singura.connection_purge(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION singura.connection_purge(timestamptz, integer) TO singura_app;

-- Events: connection.deleted, connection.undeleted, connection.purged (docs/events.md).
-- A force delete (the row deleted while live) emits connection.deleted and then
-- connection.purged, so that a consumer that acts on purges sees every one. A
-- connection deleted with its organization emits nothing: the organization's events
-- go with it.
CREATE FUNCTION singura.event_connection_lifecycle() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM 1 FROM singura.organizations WHERE id = OLD.organization_id;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        IF OLD.deleted_at IS NULL THEN
            PERFORM singura.event_append(
                OLD.organization_id, 'connection.deleted', OLD.id, NULL,
                jsonb_build_object('platform', OLD.platform, 'status', OLD.status,
                                   'force', true, 'delete_time', now(),
                                   'purge_time', now(),
                                   'tokens_revoked_at_provider', false));
        END IF;
        PERFORM singura.event_append(
            OLD.organization_id, 'connection.purged', OLD.id, NULL,
            jsonb_build_object('platform', OLD.platform, 'force', OLD.deleted_at IS NULL,
                               'delete_time', coalesce(OLD.deleted_at, now()),
                               'purge_time', now()));
        RETURN NULL;
    END IF;
    IF OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL THEN
        PERFORM singura.event_append(
            NEW.organization_id, 'connection.deleted', NEW.id, NULL,
            jsonb_build_object('platform', NEW.platform, 'status', NEW.status,
                               'force', false, 'delete_time', NEW.deleted_at,
                               'purge_time', NEW.purge_at,
                               'tokens_revoked_at_provider', NEW.deleted_revoked_at_provider));
    ELSIF OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NULL THEN
        PERFORM singura.event_append(
            NEW.organization_id, 'connection.undeleted', NEW.id, NULL,
            jsonb_build_object('platform', NEW.platform, 'status', NEW.status,
                               'delete_time', OLD.deleted_at, 'undelete_time', now(),
                               'tokens_revoked_at_provider', OLD.deleted_revoked_at_provider));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER platform_connections_lifecycle_events
    AFTER UPDATE OF deleted_at OR DELETE ON singura.platform_connections
    FOR EACH ROW EXECUTE FUNCTION singura.event_connection_lifecycle();

-- Audit (docs/audit.md): connection.deleted / connection.undeleted / connection.purged.
-- Only the platform_connections branch changes.
CREATE OR REPLACE FUNCTION singura.audit_row_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
DECLARE
    resource text := TG_ARGV[0];
    rec jsonb := CASE WHEN TG_OP = 'DELETE' THEN to_jsonb(OLD) ELSE to_jsonb(NEW) END;
    old_rec jsonb := CASE WHEN TG_OP = 'UPDATE' THEN to_jsonb(OLD) END;
    -- Bookkeeping columns whose changes are not events in themselves.
    bookkeeping text[] := ARRAY['version', 'updated_at', 'bucket_tokens', 'bucket_updated_at',
                                'state_changed_at', 'destroyed_at'];
    changed text[] := '{}';
    v_action text := resource || '.' || CASE TG_OP WHEN 'INSERT' THEN 'created'
                                                   WHEN 'DELETE' THEN 'deleted'
                                                   ELSE 'updated' END;
    v_org uuid;
    v_id text := rec ->> 'id';
    v_details jsonb := '{}';
BEGIN
    IF TG_OP = 'UPDATE' THEN
        SELECT coalesce(array_agg(n.key ORDER BY n.key), '{}') INTO changed
          FROM jsonb_each(rec) n
         WHERE n.value IS DISTINCT FROM old_rec -> n.key AND NOT n.key = ANY (bookkeeping);
        IF cardinality(changed) = 0 THEN
            RETURN NULL;  -- e.g. a rate-limit bucket refill: not an event
        END IF;
        v_details := jsonb_build_object('changed', to_jsonb(changed));
    END IF;
    v_org := CASE WHEN TG_TABLE_NAME = 'organizations' THEN (rec ->> 'id')::uuid
                  ELSE (rec ->> 'organization_id')::uuid END;

    IF TG_TABLE_NAME = 'platform_connections' THEN
        v_details := v_details || jsonb_build_object('platform', rec ->> 'platform');
        -- Soft delete (migration 030): the mark set is connection.deleted, cleared is
        -- connection.undeleted, and the row of a marked connection going is its purge.
        -- A delete of a live row (force, or its organization's) stays connection.deleted.
        IF TG_OP = 'UPDATE' AND 'deleted_at' = ANY (changed) THEN
            v_action := CASE WHEN rec ->> 'deleted_at' IS NULL THEN 'connection.undeleted'
                             ELSE 'connection.deleted' END;
            v_details := v_details || (
                SELECT jsonb_build_object(
                           'purge_time', marked -> 'purge_at',
                           'tokens_revoked_at_provider', marked -> 'deleted_revoked_at_provider')
                  FROM (SELECT CASE WHEN rec ->> 'deleted_at' IS NULL THEN old_rec
                                    ELSE rec END AS marked) m);
        ELSIF TG_OP = 'DELETE' AND rec ->> 'deleted_at' IS NOT NULL THEN
            v_action := 'connection.purged';
            v_details := v_details || jsonb_build_object(
                'delete_time', rec -> 'deleted_at', 'purge_time', rec -> 'purge_at');
        ELSIF TG_OP = 'DELETE' THEN
            v_details := v_details || jsonb_build_object('recoverable', false);
        END IF;
        IF TG_OP = 'UPDATE' AND 'status' = ANY (changed) THEN
            v_action := 'connection.status_changed';
            v_details := v_details || jsonb_build_object(
                'old_status', old_rec ->> 'status', 'new_status', rec ->> 'status',
                'reason', rec ->> 'status_reason');
        END IF;
    ELSIF TG_TABLE_NAME = 'encrypted_credentials' THEN
        v_action := CASE
            WHEN TG_OP = 'INSERT' THEN 'credential.stored'
            WHEN TG_OP = 'DELETE' THEN 'credential.deleted'
            WHEN rec ->> 'state' = 'superseded' THEN 'credential.superseded'
            WHEN rec ->> 'state' = 'revoked' THEN 'credential.revoked'
            ELSE 'credential.updated' END;
        v_details := v_details || jsonb_build_object(
            'connection_id', rec ->> 'connection_id', 'credential_type', rec ->> 'credential_type',
            'version', (rec ->> 'version')::int, 'key_version', (rec ->> 'key_version')::int);
    ELSIF TG_TABLE_NAME = 'api_keys' THEN
        v_id := rec ->> 'key_id';
        IF TG_OP = 'UPDATE' AND 'revoked_at' = ANY (changed) THEN
            v_action := 'api_key.revoked';
        END IF;
        v_details := v_details || jsonb_build_object('roles', rec -> 'roles');
    ELSIF TG_TABLE_NAME = 'data_keys' THEN
        v_id := rec ->> 'version';
        IF TG_OP = 'UPDATE' AND rec ->> 'state' = 'destroyed' THEN
            v_action := 'data_key.destroyed';
        END IF;
        v_details := v_details || jsonb_build_object('root_key_id', rec ->> 'root_key_id');
    END IF;

    INSERT INTO singura.audit_logs (organization_id, actor, action, resource_type, resource_id,
                                    request_id, outcome, details)
    VALUES (v_org,
            coalesce(nullif(current_setting('singura.actor', true), ''), 'system'),
            v_action, resource, v_id,
            nullif(current_setting('singura.request_id', true), ''),
            'success', v_details);
    RETURN NULL;
END
$$;
