-- 024_events_outbox: the event outbox (issue #24, first slice).
--
-- Every event is written by the transaction that makes the change, by AFTER triggers
-- on the tenant tables: a rolled-back change (or a failed item of a batch, whose
-- subtransaction rolls back) emits nothing; a committed one always emits. Event data
-- holds ids, states, times and reasons -- never a ciphertext, token, key or plaintext.
--
-- The cursor: each organization has a counter row (event_cursors). The trigger bumps
-- it (INSERT ... ON CONFLICT DO UPDATE, which takes the row lock) and keeps the lock
-- until its transaction ends. So two transactions that emit events for the same
-- organization get their cursors in commit order: the second waits at the counter
-- until the first commits (and then continues from its value) or rolls back (and then
-- reuses it). A committed event with cursor n+1 therefore implies that every event
-- up to n is already committed, and a reader that follows `cursor > last seen` never
-- skips one. Cursors are dense per organization: 1, 2, 3, ... with no holes.
-- The price: event-emitting writes of one organization serialize from the trigger to
-- their commit (one statement for a store); see docs/events.md.

-- The per-organization counter. Written only by singura.event_append (the schema
-- owner's, SECURITY DEFINER); the service role has no privilege on it at all.
CREATE TABLE singura.event_cursors (
    organization_id uuid PRIMARY KEY
        REFERENCES singura.organizations (id) ON DELETE CASCADE,
    last_cursor     bigint NOT NULL CONSTRAINT event_cursors_positive CHECK (last_cursor >= 1)
);

CREATE TABLE singura.events (
    organization_id uuid NOT NULL REFERENCES singura.organizations (id) ON DELETE CASCADE,
    -- Position in the organization's stream, from 1, dense, in commit order.
    cursor          bigint NOT NULL,
    type            text NOT NULL
        CONSTRAINT events_type_format CHECK (type ~ '^[a-z_]+(\.[a-z_]+)+$'),
    -- Subject ids (NULL where the event has none of that kind).
    connection_id   uuid,
    credential_id   uuid,
    data            jsonb NOT NULL DEFAULT '{}'
        CONSTRAINT events_data_object CHECK (jsonb_typeof(data) = 'object'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, cursor)
);

-- Forced row-level security, like every tenant table: the service role reads its own
-- organization's events only; nobody but the owner's trigger functions appends, and
-- nobody changes or deletes one (an organization's deletion cascades, as the owner).
ALTER TABLE singura.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE singura.events FORCE ROW LEVEL SECURITY;
CREATE POLICY events_read ON singura.events FOR SELECT
    USING (organization_id = singura.current_organization_id());
CREATE POLICY events_append ON singura.events FOR INSERT
    WITH CHECK ((SELECT singura.is_schema_owner()));
GRANT SELECT ON singura.events TO singura_app;

-- Append one event, its cursor taken from the organization's counter (locked until
-- the calling transaction ends: see the header).
CREATE FUNCTION singura.event_append(p_org uuid, p_type text, p_connection uuid,
                                     p_credential uuid, p_data jsonb) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
DECLARE
    v_cursor bigint;
BEGIN
    INSERT INTO singura.event_cursors AS c (organization_id, last_cursor)
    VALUES (p_org, 1)
    ON CONFLICT (organization_id) DO UPDATE SET last_cursor = c.last_cursor + 1
    RETURNING c.last_cursor INTO v_cursor;
    INSERT INTO singura.events (organization_id, cursor, type, connection_id, credential_id,
                                data)
    VALUES (p_org, v_cursor, p_type, p_connection, p_credential, p_data);
END
$$;
REVOKE ALL ON FUNCTION singura.event_append(uuid, text, uuid, uuid, jsonb) FROM PUBLIC;

-- connection.created, connection.status_changed, connection.scopes_changed.
-- Never metadata or display_name (free text a client chose): ids, states, reasons.
CREATE FUNCTION singura.event_connection_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM singura.event_append(
            NEW.organization_id, 'connection.created', NEW.id, NULL,
            jsonb_build_object('platform', NEW.platform, 'status', NEW.status,
                               'platform_user_id', NEW.platform_user_id,
                               'platform_workspace_id', NEW.platform_workspace_id,
                               'create_time', NEW.created_at));
        RETURN NULL;
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        PERFORM singura.event_append(
            NEW.organization_id, 'connection.status_changed', NEW.id, NULL,
            jsonb_build_object('platform', NEW.platform, 'from', OLD.status, 'to', NEW.status,
                               'reason', NEW.status_reason, 'change_time', NEW.updated_at));
    END IF;
    IF NEW.permissions_granted IS DISTINCT FROM OLD.permissions_granted
       OR NEW.granted_user_scopes IS DISTINCT FROM OLD.granted_user_scopes THEN
        PERFORM singura.event_append(
            NEW.organization_id, 'connection.scopes_changed', NEW.id, NULL,
            jsonb_build_object('platform', NEW.platform,
                               'from', to_jsonb(OLD.permissions_granted),
                               'to', to_jsonb(NEW.permissions_granted),
                               'user_scopes_from', to_jsonb(OLD.granted_user_scopes),
                               'user_scopes_to', to_jsonb(NEW.granted_user_scopes),
                               'change_time', NEW.updated_at));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER platform_connections_events
    AFTER INSERT OR UPDATE OF status, permissions_granted, granted_user_scopes
    ON singura.platform_connections
    FOR EACH ROW EXECUTE FUNCTION singura.event_connection_change();

-- credential.stored: a new version row. Never the ciphertext, nonce or fingerprint.
CREATE FUNCTION singura.event_credential_stored() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
BEGIN
    PERFORM singura.event_append(
        NEW.organization_id, 'credential.stored', NEW.connection_id, NEW.id,
        jsonb_build_object('credential_type', NEW.credential_type, 'version', NEW.version,
                           'state', NEW.state, 'expire_time', NEW.expires_at,
                           'store_time', NEW.created_at));
    RETURN NULL;
END
$$;
CREATE TRIGGER encrypted_credentials_events
    AFTER INSERT ON singura.encrypted_credentials
    FOR EACH ROW EXECUTE FUNCTION singura.event_credential_stored();

-- ListEvents and WatchEvents in one round trip (migration 013's scoped functions):
-- an organization's events after a cursor, oldest first, optionally of some types.
CREATE FUNCTION singura.events_after_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text,
    p_org uuid, p_after bigint, p_types text[], p_limit integer)
RETURNS SETOF singura.events
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT * FROM singura.events
 WHERE organization_id = p_org AND cursor > p_after
   AND (cardinality(p_types) = 0 OR type = ANY (p_types))
 ORDER BY cursor
 LIMIT p_limit;
$$;
GRANT EXECUTE ON FUNCTION
    singura.events_after_scoped(text, text, text, text, uuid, bigint, text[], integer)
    TO singura_app;
