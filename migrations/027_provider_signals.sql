-- 027_provider_signals: provider revocation signals taken in (issue #24, "Signals in";
-- docs/events.md, "Provider signals").
--
-- * api_keys gains the role 'signals': IngestProviderSignal, and nothing else.
-- * oauth_clients gains a sealed Slack signing secret (the Events API's request
--   signatures). Like the client secret it is sealed under the organization's data key
--   version key_version, bound to the row's id (with a type of its own, so neither
--   ciphertext opens as the other), and never returned. Rewrap re-seals both.
-- * provider_signals_seen: the ids of the signals already taken (a Slack request's
--   signature and timestamp, a Slack event_id, a RISC token's jti), each until it
--   expires. Not a tenant table -- a signal names no organization until it is verified
--   -- so only the functions below (the schema owner's) read or write it; several vault
--   processes share it, so a replay is refused whichever process sees it.
-- * A signal's changes happen in one transaction: the claim of its ids, then, in each
--   organization it concerns, the connections it revokes, with their audit events
--   (the audit trigger) and events (connection.status_changed by migration 024's
--   trigger, connection.revoked_at_provider by connections_revoked_at_provider). A
--   failure anywhere rolls all of it back, the claim included.

ALTER TABLE singura.api_keys DROP CONSTRAINT api_keys_roles_known;
ALTER TABLE singura.api_keys ADD CONSTRAINT api_keys_roles_known
    CHECK (roles <@ ARRAY['reader', 'writer', 'revealer', 'refresh_token_revealer', 'signals']);

ALTER TABLE singura.oauth_clients
    ADD COLUMN signing_secret_ciphertext bytea,
    ADD COLUMN signing_secret_nonce bytea,
    ADD CONSTRAINT oauth_clients_signing_secret_sealed CHECK (
        (signing_secret_ciphertext IS NULL) = (signing_secret_nonce IS NULL));

CREATE TABLE singura.provider_signals_seen (
    -- "<platform>:<kind>:<id>", e.g. "slack:event:A123:Ev456", "google_workspace:jti:...".
    signal_id  text PRIMARY KEY
        CONSTRAINT provider_signals_seen_id_length CHECK (char_length(signal_id) <= 512),
    -- After this the id may be forgotten: a signal this old is refused as stale anyway.
    expires_at timestamptz NOT NULL,
    taken_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provider_signals_seen_expiry_idx ON singura.provider_signals_seen (expires_at);
-- Forced row-level security with the owner's policy only: the service role has no
-- privilege on the table, and the owner's functions below are its one door.
ALTER TABLE singura.provider_signals_seen ENABLE ROW LEVEL SECURITY;
ALTER TABLE singura.provider_signals_seen FORCE ROW LEVEL SECURITY;
CREATE POLICY provider_signals_seen_owner ON singura.provider_signals_seen
    USING ((SELECT singura.is_schema_owner())) WITH CHECK ((SELECT singura.is_schema_owner()));

-- Take a signal: true if none of its ids was taken before (they are recorded, until
-- their expiry, in the calling transaction), false if one was (a replay; the caller
-- refuses it and rolls back). Two transactions taking the same id: the second waits
-- for the first at the unique index and then sees it taken (or, if the first rolled
-- back, takes it). Expired ids are forgotten a few at a time on the way.
CREATE FUNCTION singura.provider_signal_claim(p_ids text[], p_expires timestamptz[])
RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
DECLARE
    v_taken integer;
BEGIN
    IF cardinality(p_ids) = 0 OR cardinality(p_ids) <> cardinality(p_expires) THEN
        RAISE EXCEPTION 'a signal needs at least one id, each with its expiry'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM singura.provider_signals_seen
     WHERE signal_id IN (SELECT s.signal_id FROM singura.provider_signals_seen s
                          WHERE s.expires_at < now()
                          ORDER BY s.expires_at LIMIT 100
                            FOR UPDATE SKIP LOCKED);
    INSERT INTO singura.provider_signals_seen (signal_id, expires_at)
    SELECT i.id, max(i.expires) FROM unnest(p_ids, p_expires) AS i (id, expires) GROUP BY i.id
    ON CONFLICT (signal_id) DO NOTHING;
    GET DIAGNOSTICS v_taken = ROW_COUNT;
    RETURN v_taken = (SELECT count(DISTINCT i) FROM unnest(p_ids) AS i);
END
$$;
REVOKE ALL ON FUNCTION singura.provider_signal_claim(text[], timestamptz[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION singura.provider_signal_claim(text[], timestamptz[]) TO singura_app;

-- The OAuth clients a signal of this platform may come from, in one round trip: for a
-- Slack signal those with a signing secret (sealed; the vault opens each and checks the
-- request's signature), for a RISC token every Google client (their client ids are the
-- token's expected audiences). A signal names no organization before it is verified,
-- so an admin key's call (admin scope) sees every organization's clients; an
-- organization key's call stays fenced to its own organization (its scope, as
-- everywhere). At most p_limit rows, in a fixed order: the caller asks for one more
-- than it accepts and refuses a platform with too many (docs/events.md).
CREATE FUNCTION singura.oauth_signal_clients_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text,
    p_platform text, p_limit integer)
RETURNS TABLE (organization_id uuid, id uuid, client_id text, key_version integer,
               signing_secret_ciphertext bytea, signing_secret_nonce bytea)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
BEGIN
    PERFORM singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
    RETURN QUERY
    SELECT o.organization_id, o.id, o.client_id, o.key_version,
           o.signing_secret_ciphertext, o.signing_secret_nonce
      FROM singura.oauth_clients o
     WHERE o.platform = p_platform
       AND (singura.is_admin_scope() OR o.organization_id = singura.current_organization_id())
       AND (p_platform <> 'slack' OR o.signing_secret_ciphertext IS NOT NULL)
     ORDER BY o.organization_id
     LIMIT p_limit;
END
$$;
REVOKE ALL ON FUNCTION singura.oauth_signal_clients_scoped(
    text, text, text, text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION singura.oauth_signal_clients_scoped(
    text, text, text, text, text, integer) TO singura_app;

-- Move the current organization's connections that a verified signal names to p_to
-- (revoked or error) with the status reason 'provider_signal', and append a
-- connection.revoked_at_provider event for each, in the caller's transaction. Matched:
-- the platform, the workspace unless p_workspace is NULL, a user in p_users unless it
-- is NULL. A connection already revoked is left alone (a later, milder signal never
-- undoes a revocation), as is one already in p_to. Runs as the owner to append events,
-- but only in the organization the caller's transaction is scoped to (row-level
-- security holds it there too). Returns each connection moved and its former status.
CREATE FUNCTION singura.connections_revoked_at_provider(
    p_platform text, p_workspace text, p_users text[], p_to text, p_signal jsonb)
RETURNS TABLE (connection_id uuid, from_status text)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
DECLARE
    v_org uuid := singura.current_organization_id();
    r record;
BEGIN
    IF v_org IS NULL THEN
        RAISE EXCEPTION 'connections_revoked_at_provider needs an organization scope'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_to NOT IN ('revoked', 'error') THEN
        RAISE EXCEPTION 'a provider signal moves connections to revoked or error, not %', p_to
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR r IN
        WITH target AS (
            SELECT c.id, c.status
              FROM singura.platform_connections c
             WHERE c.organization_id = v_org AND c.platform = p_platform
               AND (p_workspace IS NULL OR c.platform_workspace_id = p_workspace)
               AND (p_users IS NULL OR c.platform_user_id = ANY (p_users))
               AND c.status NOT IN ('revoked', p_to)
             ORDER BY c.id
               FOR NO KEY UPDATE)
        UPDATE singura.platform_connections c
           SET status = p_to, status_reason = 'provider_signal'
          FROM target t
         WHERE c.organization_id = v_org AND c.id = t.id
        RETURNING c.id, t.status AS old_status, c.updated_at
    LOOP
        PERFORM singura.event_append(
            v_org, 'connection.revoked_at_provider', r.id, NULL,
            p_signal || jsonb_build_object('platform', p_platform, 'from', r.old_status,
                                           'to', p_to, 'reason', 'provider_signal',
                                           'change_time', r.updated_at));
        connection_id := r.id;
        from_status := r.old_status;
        RETURN NEXT;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION singura.connections_revoked_at_provider(
    text, text, text[], text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION singura.connections_revoked_at_provider(
    text, text, text[], text, jsonb) TO singura_app;
