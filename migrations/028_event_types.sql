-- 028_event_types: the rest of issue #24's event types, a global order of events for
-- admin watches (a sequencer), and expiry reminders whose "already sent" state lives
-- here, so that several vault processes never send one twice.
--
-- Every event is still appended by singura.event_append (migration 024, unchanged), in
-- the transaction of the change, by triggers or by the SECURITY DEFINER functions below.
--
-- The global position. An organization's cursor is dense and in commit order because
-- its writers serialize on the organization's counter row; doing the same across all
-- organizations would serialize every write of the vault. Instead each event gets a
-- `position` after it commits, from a sequencer (as the audit chain's, migration 012):
-- singura.events_sequence takes an exclusive advisory lock, so one sequencer of any
-- process runs at a time, numbers the committed unsequenced events from the head, in
-- each organization's cursor order, and commits. Because sequencer transactions follow
-- each other, a reader that sees position n+1 committed also sees n: following
-- `position > last seen` is complete across organizations. Because an organization's
-- cursor n+1 committed implies n committed, the unsequenced events a sequencer sees are,
-- per organization, the cursors right after the last sequenced one.
--
-- Waking other processes: a sequencer that numbered events NOTIFYs 'singura_events'
-- once per batch. Writers themselves never NOTIFY: PostgreSQL serializes the commits
-- of every transaction that notified (a database-wide lock on the notification queue,
-- held through commit), which would put all writes of all organizations in one line.

-- The position: NULL until sequenced.
ALTER TABLE singura.events ADD COLUMN position bigint;
CREATE UNIQUE INDEX events_position_key ON singura.events (position);
-- The sequencer's pick: each organization's unsequenced events in cursor order.
CREATE INDEX events_unsequenced_idx ON singura.events (organization_id, cursor)
    WHERE position IS NULL;

-- The last position handed out (one row; written only by the sequencer, under its lock).
CREATE TABLE singura.event_position_head (
    singleton     boolean PRIMARY KEY DEFAULT true CONSTRAINT event_position_head_one CHECK (singleton),
    last_position bigint NOT NULL CONSTRAINT event_position_head_not_negative
        CHECK (last_position >= 0)
);
INSERT INTO singura.event_position_head (last_position) VALUES (0);

-- The schema owner reads and numbers every organization's events only inside the
-- functions of this migration (singura.events_all on, set by them for their own
-- transaction); elsewhere, the owner included, the tenant policy of migration 024 holds.
CREATE POLICY events_every_organization ON singura.events FOR SELECT
    USING ((SELECT singura.is_schema_owner()
                   AND current_setting('singura.events_all', true) = 'on'));
CREATE POLICY events_sequenced ON singura.events FOR UPDATE
    USING ((SELECT singura.is_schema_owner()
                   AND current_setting('singura.events_all', true) = 'on'))
    WITH CHECK ((SELECT singura.is_schema_owner()
                        AND current_setting('singura.events_all', true) = 'on'));

-- Number up to p_limit committed unsequenced events; returns how many, of which types
-- (for the emitted-events metric: each event is numbered once, by one process), and
-- how old the oldest still unsequenced one is, in seconds (0 when none).
CREATE FUNCTION singura.events_sequence(p_limit integer,
                                        OUT sequenced integer, OUT types text[],
                                        OUT counts integer[], OUT oldest_pending_s double precision)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    -- Another sequencer's batch takes milliseconds; never queue long behind one.
    SET lock_timeout = '5s'
    AS $$
DECLARE
    v_head bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(1397114628);
    PERFORM set_config('singura.events_all', 'on', true);
    SELECT last_position INTO STRICT v_head FROM event_position_head FOR UPDATE;
    WITH picked AS (
        SELECT e.organization_id, e.cursor, e.type
          FROM events e
         WHERE e.position IS NULL
         ORDER BY e.organization_id, e.cursor
         LIMIT p_limit
    ), numbered AS (
        SELECT p.*, v_head + row_number() OVER (ORDER BY p.organization_id, p.cursor) AS pos
          FROM picked p
    ), moved AS (
        UPDATE events e SET position = n.pos
          FROM numbered n
         WHERE e.organization_id = n.organization_id AND e.cursor = n.cursor
        RETURNING e.type, e.position
    ), by_type AS (
        SELECT m.type, count(*)::integer AS n, max(m.position) AS last FROM moved m GROUP BY m.type
    )
    SELECT coalesce(sum(b.n), 0)::integer, coalesce(array_agg(b.type ORDER BY b.type), '{}'),
           coalesce(array_agg(b.n ORDER BY b.type), '{}'), max(b.last)
      INTO sequenced, types, counts, v_head
      FROM by_type b;
    IF sequenced > 0 THEN
        UPDATE event_position_head SET last_position = v_head;
        -- No payload: a wake-up, never data.
        PERFORM pg_notify('singura_events', '');
    END IF;
    SELECT coalesce(extract(epoch FROM clock_timestamp() - min(e.created_at)), 0)
      INTO oldest_pending_s
      FROM events e WHERE e.position IS NULL;
END
$$;
REVOKE ALL ON FUNCTION singura.events_sequence(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION singura.events_sequence(integer) TO singura_app;

-- An admin key's ListEvents and WatchEvents: every organization's events after a
-- position, in position order. Refused outside admin scope (an organization key's
-- request is fenced to its own organization before it gets here: db/pool.py).
CREATE FUNCTION singura.events_after_position_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text,
    p_after bigint, p_types text[], p_limit integer)
RETURNS SETOF singura.events
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
BEGIN
    PERFORM singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
    IF NOT singura.is_admin_scope() THEN
        RAISE EXCEPTION 'every organization''s events need admin scope'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM set_config('singura.events_all', 'on', true);
    RETURN QUERY
        SELECT * FROM singura.events e
         WHERE e.position > p_after
           AND (cardinality(p_types) = 0 OR e.type = ANY (p_types))
         ORDER BY e.position
         LIMIT p_limit;
END
$$;
REVOKE ALL ON FUNCTION
    singura.events_after_position_scoped(text, text, text, text, bigint, text[], integer)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    singura.events_after_position_scoped(text, text, text, text, bigint, text[], integer)
    TO singura_app;

-- connection.refresh_failed / connection.refresh_recovered -------------------------------

-- The provider's error code of the last failure (sanitized: "invalid_grant", "http_503",
-- "timeout", ...; providers/outcomes.py), beside last_error's sentence.
ALTER TABLE singura.connection_refresh_state
    ADD COLUMN last_error_code text NOT NULL DEFAULT ''
        CONSTRAINT connection_refresh_state_error_code_length
        CHECK (char_length(last_error_code) <= 100);

CREATE FUNCTION singura.event_refresh_outcome() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
DECLARE
    v_before integer := CASE WHEN TG_OP = 'INSERT' THEN 0 ELSE OLD.failure_count END;
BEGIN
    IF NEW.failure_count > v_before THEN
        PERFORM singura.event_append(
            NEW.organization_id, 'connection.refresh_failed', NEW.connection_id, NULL,
            jsonb_build_object('failure_count', NEW.failure_count,
                               'error_code', NEW.last_error_code,
                               'reason', NEW.last_error,
                               'next_refresh_time', NEW.next_refresh_at,
                               'failure_time', now()));
    ELSIF NEW.failure_count = 0 AND v_before > 0 THEN
        PERFORM singura.event_append(
            NEW.organization_id, 'connection.refresh_recovered', NEW.connection_id, NULL,
            jsonb_build_object('previous_failure_count', v_before,
                               'refresh_time', NEW.last_refresh_at,
                               'next_refresh_time', NEW.next_refresh_at));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER connection_refresh_state_events
    AFTER INSERT OR UPDATE OF failure_count ON singura.connection_refresh_state
    FOR EACH ROW EXECUTE FUNCTION singura.event_refresh_outcome();

-- connection.authorized / connection.reauthorized ----------------------------------------

-- A completion consumes its authorization with the outcome, in the transaction that
-- creates or reconnects the connection (migration 019).
CREATE FUNCTION singura.event_authorization_completed() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
BEGIN
    PERFORM singura.event_append(
        NEW.organization_id, 'connection.' || NEW.outcome, NEW.result_connection_id, NULL,
        jsonb_build_object('platform', NEW.platform, 'authorization_id', NEW.id,
                           'granted_scopes', to_jsonb(coalesce(NEW.result_granted_scopes, '{}')),
                           'authorize_time', NEW.consumed_at));
    RETURN NULL;
END
$$;
CREATE TRIGGER oauth_authorizations_events
    AFTER UPDATE OF outcome ON singura.oauth_authorizations
    FOR EACH ROW
    WHEN (OLD.outcome IS NULL AND NEW.outcome IN ('authorized', 'reauthorized')
          AND NEW.result_connection_id IS NOT NULL)
    EXECUTE FUNCTION singura.event_authorization_completed();

-- key.data_key_rotated ----------------------------------------------------------------

-- A new data key version after the first (RotateDataKey). Never the key, wrapped or not.
CREATE FUNCTION singura.event_data_key_rotated() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
BEGIN
    PERFORM singura.event_append(
        NEW.organization_id, 'key.data_key_rotated', NULL, NULL,
        jsonb_build_object('key_version', NEW.version, 'previous_key_version', NEW.version - 1,
                           'rotate_time', NEW.created_at));
    RETURN NULL;
END
$$;
CREATE TRIGGER data_keys_events
    AFTER INSERT ON singura.data_keys
    FOR EACH ROW WHEN (NEW.version > 1)
    EXECUTE FUNCTION singura.event_data_key_rotated();

-- key.rewrap_completed ------------------------------------------------------------------

-- A rewrap job is global (migration 005); its event is per organization, like every
-- event: one for each organization that has an older live data key version beside its
-- newest -- the organizations whose credentials the job moved onto their newest key.
CREATE FUNCTION singura.event_rewrap_completed() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
DECLARE
    k record;
BEGIN
    -- The job finishes in admin scope, which reads data keys (migration 005); the
    -- gate below lets the owner read them in any scope, inside this function only.
    PERFORM set_config('singura.events_all', 'on', true);
    FOR k IN
        SELECT d.organization_id, max(d.version) AS newest
          FROM data_keys d
         WHERE d.state = 'active'
         GROUP BY d.organization_id
        HAVING count(*) > 1
         ORDER BY d.organization_id
    LOOP
        PERFORM singura.event_append(
            k.organization_id, 'key.rewrap_completed', NULL, NULL,
            jsonb_build_object('job_id', NEW.id, 'key_version', k.newest,
                               'failed', (SELECT count(*) FROM rewrap_failures f
                                           WHERE f.job_id = NEW.id
                                             AND f.organization_id = k.organization_id),
                               'finish_time', NEW.finished_at));
    END LOOP;
    PERFORM set_config('singura.events_all', '', true);
    RETURN NULL;
END
$$;
CREATE POLICY data_keys_rewrap_events ON singura.data_keys FOR SELECT
    USING ((SELECT singura.is_schema_owner()
                   AND current_setting('singura.events_all', true) = 'on'));
CREATE TRIGGER rewrap_jobs_events
    AFTER UPDATE OF state ON singura.rewrap_jobs
    FOR EACH ROW WHEN (OLD.state = 'running' AND NEW.state = 'completed')
    EXECUTE FUNCTION singura.event_rewrap_completed();

-- audit.checkpoint_created --------------------------------------------------------------

-- A signed checkpoint of an organization's chain. The system chain (nil key) belongs to
-- no organization and emits nothing. An organization deleted (its chain kept until
-- erased) emits nothing either: its events went with it.
CREATE FUNCTION singura.event_audit_checkpoint() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
BEGIN
    BEGIN
        PERFORM singura.event_append(
            NEW.chain_key, 'audit.checkpoint_created', NULL, NULL,
            jsonb_build_object('chain_seq', NEW.chain_seq,
                               'chain_hash', encode(NEW.chain_hash, 'hex'),
                               'key_id', NEW.key_id, 'sign_time', NEW.signed_at));
    EXCEPTION WHEN foreign_key_violation THEN
        NULL;
    END;
    RETURN NULL;
END
$$;
CREATE TRIGGER audit_signed_checkpoints_events
    AFTER INSERT ON singura.audit_signed_checkpoints
    FOR EACH ROW WHEN (NEW.chain_key <> '00000000-0000-0000-0000-000000000000')
    EXECUTE FUNCTION singura.event_audit_checkpoint();

-- credential.expiring / credential.expired ----------------------------------------------

-- What was sent for each credential version: the smallest reminder threshold already
-- sent, and whether credential.expired was. A tenant table (forced row-level security);
-- the service role has no privilege on it: only the function below writes it.
CREATE TABLE singura.credential_expiry_notices (
    organization_id    uuid NOT NULL,
    credential_id      uuid NOT NULL,
    reminded_threshold interval,
    reminded_at        timestamptz,
    expired_notice_at  timestamptz,
    PRIMARY KEY (organization_id, credential_id),
    FOREIGN KEY (organization_id, credential_id)
        REFERENCES singura.encrypted_credentials (organization_id, id) ON DELETE CASCADE
);
ALTER TABLE singura.credential_expiry_notices ENABLE ROW LEVEL SECURITY;
ALTER TABLE singura.credential_expiry_notices FORCE ROW LEVEL SECURITY;
CREATE POLICY credential_expiry_notices_tenant ON singura.credential_expiry_notices
    FOR SELECT USING (organization_id = singura.current_organization_id());
CREATE POLICY credential_expiry_notices_job ON singura.credential_expiry_notices
    USING ((SELECT singura.is_schema_owner()
                   AND current_setting('singura.events_all', true) = 'on'))
    WITH CHECK ((SELECT singura.is_schema_owner()
                        AND current_setting('singura.events_all', true) = 'on'));

-- Current versions by expiry, across organizations (the reminder job's scan).
CREATE INDEX encrypted_credentials_expiring_idx ON singura.encrypted_credentials (expires_at)
    WHERE expires_at IS NOT NULL AND state = 'active';

-- Send what is due at p_now: for each current credential version with an expire_time,
-- credential.expired once when it has passed, else credential.expiring for the smallest
-- threshold (p_thresholds, labelled p_labels) it is within -- only thresholds shorter
-- than the version's lifetime (an access token that lives an hour gets no "1d" reminder),
-- each at most once, and none larger than one already sent (a job that was down sends
-- the most urgent reminder only). The claim is the upsert's row lock with its WHERE
-- guard: a concurrent job waits, then finds it sent and emits nothing. Returns how many
-- events it emitted (at most p_limit; call again while it returns p_limit).
CREATE FUNCTION singura.credential_expiry_notices_send(
    p_now timestamptz, p_thresholds interval[], p_labels text[], p_limit integer)
RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
DECLARE
    v_max interval := coalesce((SELECT max(t) FROM unnest(p_thresholds) t), interval '0');
    c record;
    v_label text;
    v_sent integer := 0;
    v_claimed boolean;
BEGIN
    IF cardinality(p_thresholds) IS DISTINCT FROM cardinality(p_labels) THEN
        RAISE EXCEPTION 'one label per threshold' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('singura.events_all', 'on', true);
    FOR c IN
        SELECT e.organization_id, e.id, e.connection_id, e.credential_type, e.version,
               e.expires_at, d.due
          FROM encrypted_credentials e
          LEFT JOIN credential_expiry_notices x
                 ON x.organization_id = e.organization_id AND x.credential_id = e.id
          CROSS JOIN LATERAL (
              SELECT CASE WHEN e.expires_at <= p_now THEN NULL
                          ELSE (SELECT min(t) FROM unnest(p_thresholds) t
                                 WHERE e.expires_at - t <= p_now
                                   AND e.expires_at - e.created_at > t) END AS due
          ) d
         WHERE e.state = 'active' AND e.expires_at IS NOT NULL
           AND e.expires_at <= p_now + v_max
           AND x.expired_notice_at IS NULL
           AND (e.expires_at <= p_now
                OR (d.due IS NOT NULL
                    AND (x.reminded_threshold IS NULL OR d.due < x.reminded_threshold)))
         ORDER BY e.expires_at, e.organization_id, e.id
         LIMIT p_limit
    LOOP
        IF c.due IS NULL THEN
            INSERT INTO credential_expiry_notices AS x
                   (organization_id, credential_id, expired_notice_at)
            VALUES (c.organization_id, c.id, p_now)
            ON CONFLICT (organization_id, credential_id) DO UPDATE
               SET expired_notice_at = EXCLUDED.expired_notice_at
             WHERE x.expired_notice_at IS NULL
            RETURNING true INTO v_claimed;
            IF v_claimed THEN
                PERFORM singura.event_append(
                    c.organization_id, 'credential.expired', c.connection_id, c.id,
                    jsonb_build_object('credential_type', c.credential_type,
                                       'version', c.version, 'expire_time', c.expires_at));
                v_sent := v_sent + 1;
            END IF;
        ELSE
            INSERT INTO credential_expiry_notices AS x
                   (organization_id, credential_id, reminded_threshold, reminded_at)
            VALUES (c.organization_id, c.id, c.due, p_now)
            ON CONFLICT (organization_id, credential_id) DO UPDATE
               SET reminded_threshold = EXCLUDED.reminded_threshold,
                   reminded_at = EXCLUDED.reminded_at
             WHERE x.expired_notice_at IS NULL
               AND (x.reminded_threshold IS NULL
                    OR EXCLUDED.reminded_threshold < x.reminded_threshold)
            RETURNING true INTO v_claimed;
            IF v_claimed THEN
                v_label := p_labels[array_position(p_thresholds, c.due)];
                PERFORM singura.event_append(
                    c.organization_id, 'credential.expiring', c.connection_id, c.id,
                    jsonb_build_object('credential_type', c.credential_type,
                                       'version', c.version, 'expire_time', c.expires_at,
                                       'threshold', v_label,
                                       'threshold_seconds', extract(epoch FROM c.due)::bigint));
                v_sent := v_sent + 1;
            END IF;
        END IF;
        v_claimed := NULL;
    END LOOP;
    RETURN v_sent;
END
$$;
REVOKE ALL ON FUNCTION
    singura.credential_expiry_notices_send(timestamptz, interval[], text[], integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    singura.credential_expiry_notices_send(timestamptz, interval[], text[], integer)
    TO singura_app;
