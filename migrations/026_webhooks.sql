-- 026_webhooks: signed webhooks over the event outbox (issue #24, item 4; docs/events.md).
--
-- * webhook_endpoints: an organization's endpoints. The signing secret is sealed with
--   AES-256-GCM under the organization's data key, bound to secret_id (new on every
--   rotation), like an OAuth client secret; during a rotation's overlap the previous
--   secret is kept, sealed the same way, until previous_expires_at.
-- * webhook_deliveries: one row per (event, endpoint), inserted by a trigger on
--   singura.events in the very transaction that appends the event, so a committed
--   event always has its deliveries and a rolled-back one has none. Test deliveries
--   (SendTestEvent) have no event.
-- * webhook_attempts: every HTTP attempt of a delivery, with its outcome.
--
-- Delivery is claimed across organizations by singura.webhook_claim (FOR UPDATE SKIP
-- LOCKED, then a lease in claimed_until): two processes never attempt one delivery at
-- once, and a process killed mid-delivery leaves the lease to expire, after which any
-- process attempts it again (at least once). The worker is in no organization's scope:
-- it reaches these tables only through the SECURITY DEFINER functions below.

CREATE TABLE singura.webhook_endpoints (
    organization_id uuid NOT NULL REFERENCES singura.organizations (id) ON DELETE CASCADE,
    id uuid NOT NULL,
    url text NOT NULL CONSTRAINT webhook_endpoints_url_length
        CHECK (char_length(url) BETWEEN 1 AND 2048),
    description text NOT NULL DEFAULT '' CONSTRAINT webhook_endpoints_description_length
        CHECK (char_length(description) <= 500),
    -- Event types delivered; empty: every type.
    types text[] NOT NULL DEFAULT '{}'
        CONSTRAINT webhook_endpoints_types_count CHECK (cardinality(types) <= 100),
    enabled boolean NOT NULL DEFAULT true,
    -- Why the vault disabled it ('gone': a 410; 'failing': SINGURA_WEBHOOK_DISABLE_AFTER
    -- of failures; 'manual': UpdateWebhookEndpoint); '' while enabled.
    disabled_reason text NOT NULL DEFAULT ''
        CONSTRAINT webhook_endpoints_disabled_reason_known
        CHECK (disabled_reason IN ('', 'gone', 'failing', 'manual')),
    -- The first failed attempt since the last successful one (NULL: not failing).
    failing_since timestamptz,
    -- The signing secret, sealed; bound to secret_id and key_version.
    secret_id uuid NOT NULL,
    secret_ciphertext bytea NOT NULL,
    secret_nonce bytea NOT NULL,
    key_version integer NOT NULL,
    -- The secret before the last rotation, signing beside it until previous_expires_at.
    previous_secret_id uuid,
    previous_secret_ciphertext bytea,
    previous_secret_nonce bytea,
    previous_key_version integer,
    previous_expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    version integer NOT NULL DEFAULT 1,
    PRIMARY KEY (organization_id, id),
    CONSTRAINT webhook_endpoints_previous_complete CHECK (
        (previous_secret_id IS NULL) = (previous_secret_ciphertext IS NULL)
        AND (previous_secret_id IS NULL) = (previous_secret_nonce IS NULL)
        AND (previous_secret_id IS NULL) = (previous_key_version IS NULL)
        AND (previous_secret_id IS NULL) = (previous_expires_at IS NULL))
);
ALTER TABLE singura.webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE singura.webhook_endpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_endpoints_tenant ON singura.webhook_endpoints
    USING (organization_id = singura.current_organization_id())
    WITH CHECK (organization_id = singura.current_organization_id());
-- The fan-out trigger and the delivery worker's functions (the schema owner's).
CREATE POLICY webhook_endpoints_worker ON singura.webhook_endpoints
    USING ((SELECT singura.is_schema_owner())) WITH CHECK ((SELECT singura.is_schema_owner()));
GRANT SELECT, INSERT, UPDATE, DELETE ON singura.webhook_endpoints TO singura_app;
CREATE TRIGGER webhook_endpoints_touch BEFORE UPDATE ON singura.webhook_endpoints
    FOR EACH ROW EXECUTE FUNCTION singura.touch_row();
-- webhook_endpoint.created/updated/deleted with the names of changed columns (never
-- values); failing_since bookkeeping is not an audit event.
CREATE TRIGGER webhook_endpoints_audit
    AFTER INSERT OR DELETE OR UPDATE OF url, types, enabled, secret_id
    ON singura.webhook_endpoints
    FOR EACH ROW EXECUTE FUNCTION singura.audit_row_change('webhook_endpoint');

-- A sealed signing secret names a live data key, as a credential does (migration 008).
CREATE FUNCTION singura.webhook_endpoint_key_must_be_live() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'singura', 'pg_temp'
    AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.key_version = OLD.key_version THEN
        RETURN NEW;
    END IF;
    PERFORM 1 FROM singura.data_keys
      WHERE organization_id = NEW.organization_id AND version = NEW.key_version
        AND state = 'active'
      FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'data key version % of the organization is not live', NEW.key_version
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'webhook_endpoints_key_live';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER webhook_endpoints_key_live BEFORE INSERT OR UPDATE ON singura.webhook_endpoints
    FOR EACH ROW EXECUTE FUNCTION singura.webhook_endpoint_key_must_be_live();

CREATE TABLE singura.webhook_deliveries (
    organization_id uuid NOT NULL,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    endpoint_id uuid NOT NULL,
    -- The event delivered (NULL for a SendTestEvent delivery).
    event_cursor bigint,
    event_type text NOT NULL,
    state text NOT NULL DEFAULT 'pending'
        CONSTRAINT webhook_deliveries_state_known
        CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- The lease of the process attempting it now (NULL: nobody), and its claim.
    claimed_until timestamptz,
    claim_token uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- When the current series of attempts began (creation, or RedeliverEvent):
    -- retries stop SINGURA_WEBHOOK_RETRY_FOR after it.
    scheduled_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    last_response_code integer,
    PRIMARY KEY (organization_id, id),
    FOREIGN KEY (organization_id, endpoint_id)
        REFERENCES singura.webhook_endpoints (organization_id, id) ON DELETE CASCADE,
    FOREIGN KEY (organization_id, event_cursor)
        REFERENCES singura.events (organization_id, cursor) ON DELETE CASCADE
);
-- One delivery per event and endpoint (test deliveries, without an event, are many).
CREATE UNIQUE INDEX webhook_deliveries_event
    ON singura.webhook_deliveries (organization_id, endpoint_id, event_cursor);
-- ListWebhookDeliveries, newest first.
CREATE INDEX webhook_deliveries_list
    ON singura.webhook_deliveries (organization_id, endpoint_id, created_at DESC, id DESC);
-- The worker's claim: due pending deliveries of every organization.
CREATE INDEX webhook_deliveries_due
    ON singura.webhook_deliveries (next_attempt_at) WHERE state = 'pending';
ALTER TABLE singura.webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE singura.webhook_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_deliveries_tenant ON singura.webhook_deliveries
    USING (organization_id = singura.current_organization_id())
    WITH CHECK (organization_id = singura.current_organization_id());
CREATE POLICY webhook_deliveries_worker ON singura.webhook_deliveries
    USING ((SELECT singura.is_schema_owner())) WITH CHECK ((SELECT singura.is_schema_owner()));
GRANT SELECT, INSERT, UPDATE ON singura.webhook_deliveries TO singura_app;

CREATE TABLE singura.webhook_attempts (
    organization_id uuid NOT NULL,
    delivery_id uuid NOT NULL,
    attempt integer NOT NULL CONSTRAINT webhook_attempts_positive CHECK (attempt >= 1),
    attempted_at timestamptz NOT NULL,
    -- delivered, http_error, gone, timeout, network_error, refused_address,
    -- secret_unavailable (docs/events.md#webhooks).
    outcome text NOT NULL CONSTRAINT webhook_attempts_outcome_format
        CHECK (outcome ~ '^[a-z_]+$'),
    response_code integer,
    latency_ms double precision NOT NULL,
    -- The first 1 KiB of the response body (invalid UTF-8 replaced).
    response_body text NOT NULL DEFAULT ''
        CONSTRAINT webhook_attempts_body_length CHECK (octet_length(response_body) <= 4096),
    -- A sentence for people (never a secret).
    error text NOT NULL DEFAULT ''
        CONSTRAINT webhook_attempts_error_length CHECK (char_length(error) <= 500),
    PRIMARY KEY (organization_id, delivery_id, attempt),
    FOREIGN KEY (organization_id, delivery_id)
        REFERENCES singura.webhook_deliveries (organization_id, id) ON DELETE CASCADE
);
ALTER TABLE singura.webhook_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE singura.webhook_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_attempts_tenant ON singura.webhook_attempts FOR SELECT
    USING (organization_id = singura.current_organization_id());
CREATE POLICY webhook_attempts_worker ON singura.webhook_attempts
    USING ((SELECT singura.is_schema_owner())) WITH CHECK ((SELECT singura.is_schema_owner()));
GRANT SELECT ON singura.webhook_attempts TO singura_app;

-- The claim reads the event it delivers and the data keys of its secrets, in any
-- organization -- only inside singura.webhook_claim (singura.webhook_worker on, set by
-- it for its own transaction); elsewhere, the owner included, the tenant policies hold.
CREATE POLICY events_webhook_worker ON singura.events FOR SELECT
    USING ((SELECT singura.is_schema_owner()
                   AND current_setting('singura.webhook_worker', true) = 'on'));
CREATE POLICY data_keys_webhook_worker ON singura.data_keys FOR SELECT
    USING ((SELECT singura.is_schema_owner()
                   AND current_setting('singura.webhook_worker', true) = 'on'));

-- Fan-out: one delivery per enabled endpoint of the event's organization whose types
-- match, in the transaction that appends the event (an AFTER trigger on the outbox, so
-- every event_append caller, present and future, is covered).
CREATE FUNCTION singura.webhook_fan_out() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'singura', 'pg_temp'
    AS $$
BEGIN
    INSERT INTO singura.webhook_deliveries (organization_id, endpoint_id, event_cursor,
                                            event_type)
    SELECT NEW.organization_id, w.id, NEW.cursor, NEW.type
      FROM singura.webhook_endpoints w
     WHERE w.organization_id = NEW.organization_id AND w.enabled
       AND (cardinality(w.types) = 0 OR NEW.type = ANY (w.types));
    RETURN NULL;
END
$$;
CREATE TRIGGER events_webhook_fan_out AFTER INSERT ON singura.events
    FOR EACH ROW EXECUTE FUNCTION singura.webhook_fan_out();

-- The worker's claim: up to p_limit due deliveries of enabled endpoints, of any
-- organization, none another process holds (SKIP LOCKED), each leased until
-- p_now + p_lease under a fresh claim token. Returns only what delivery needs: the
-- URL, the event, and the sealed secret(s) with their wrapped data keys (the previous
-- secret only while its overlap lasts). p_now is the worker's clock.
CREATE FUNCTION singura.webhook_claim(p_now timestamptz, p_lease interval, p_limit integer)
RETURNS TABLE (
    organization_id uuid, delivery_id uuid, endpoint_id uuid, claim_token uuid, url text,
    event_cursor bigint, event_type text, connection_id uuid, credential_id uuid,
    event_data jsonb, event_time timestamptz, attempts integer, scheduled_at timestamptz,
    secret_id uuid, secret_ciphertext bytea, secret_nonce bytea, key_version integer,
    root_key_id text, wrapped_key bytea,
    previous_secret_id uuid, previous_secret_ciphertext bytea, previous_secret_nonce bytea,
    previous_key_version integer, previous_root_key_id text, previous_wrapped_key bytea)
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'singura', 'pg_temp'
    AS $$
SELECT set_config('singura.webhook_worker', 'on', true);
WITH due AS (
    SELECT d.organization_id, d.id
      FROM singura.webhook_deliveries d
      JOIN singura.webhook_endpoints w
        ON w.organization_id = d.organization_id AND w.id = d.endpoint_id
     WHERE d.state = 'pending' AND d.next_attempt_at <= p_now
       -- Checked again on the row as locked: a lease committed after this
       -- statement's snapshot is seen here, and the row is left to its holder.
       AND (d.claimed_until IS NULL OR d.claimed_until <= p_now)
       AND w.enabled
     ORDER BY d.next_attempt_at
     LIMIT p_limit
       FOR UPDATE OF d SKIP LOCKED
), leased AS (
    UPDATE singura.webhook_deliveries d
       SET claimed_until = p_now + p_lease, claim_token = gen_random_uuid()
      FROM due
     WHERE d.organization_id = due.organization_id AND d.id = due.id
    RETURNING d.*
)
SELECT l.organization_id, l.id, l.endpoint_id, l.claim_token, w.url,
       l.event_cursor, l.event_type, e.connection_id, e.credential_id,
       coalesce(e.data, '{}'::jsonb), coalesce(e.created_at, l.created_at), l.attempts,
       l.scheduled_at,
       w.secret_id, w.secret_ciphertext, w.secret_nonce, w.key_version,
       k.root_key_id, k.wrapped_key,
       p.previous_secret_id, p.previous_secret_ciphertext, p.previous_secret_nonce,
       p.previous_key_version, pk.root_key_id, pk.wrapped_key
  FROM leased l
  JOIN singura.webhook_endpoints w
    ON w.organization_id = l.organization_id AND w.id = l.endpoint_id
  LEFT JOIN singura.events e
    ON e.organization_id = l.organization_id AND e.cursor = l.event_cursor
  LEFT JOIN singura.data_keys k
    ON k.organization_id = w.organization_id AND k.version = w.key_version
   AND k.state = 'active'
  LEFT JOIN LATERAL (
        SELECT w.previous_secret_id, w.previous_secret_ciphertext, w.previous_secret_nonce,
               w.previous_key_version
         WHERE w.previous_expires_at > p_now) p ON true
  LEFT JOIN singura.data_keys pk
    ON pk.organization_id = w.organization_id AND pk.version = p.previous_key_version
   AND pk.state = 'active';
$$;
REVOKE ALL ON FUNCTION singura.webhook_claim(timestamptz, interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION singura.webhook_claim(timestamptz, interval, integer)
    TO singura_app;

-- Record one attempt of a claimed delivery and what follows from it, in one
-- transaction: the attempt row; the delivery's new state (only under the claim that
-- made the attempt: a holder whose lease expired and was taken over records its
-- attempt but no longer decides the state); the endpoint's failure streak; and, when
-- the endpoint answered 410 (p_gone) or has failed since before p_now - p_disable_after,
-- disabling it with the event webhook.endpoint_disabled. Returns the reason the
-- endpoint was disabled by this call ('' if it was not).
CREATE FUNCTION singura.webhook_record_attempt(
    p_org uuid, p_delivery uuid, p_claim uuid, p_now timestamptz, p_outcome text,
    p_response_code integer, p_latency_ms double precision, p_body text, p_error text,
    p_state text, p_next_attempt_at timestamptz, p_gone boolean, p_disable_after interval)
RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'singura', 'pg_temp'
    AS $$
DECLARE
    v_delivery singura.webhook_deliveries;
    v_endpoint singura.webhook_endpoints;
    v_reason text := '';
BEGIN
    SELECT * INTO v_delivery FROM singura.webhook_deliveries
     WHERE organization_id = p_org AND id = p_delivery FOR UPDATE;
    IF NOT FOUND THEN
        RETURN '';  -- the endpoint (and its deliveries) was deleted meanwhile
    END IF;
    INSERT INTO singura.webhook_attempts (organization_id, delivery_id, attempt, attempted_at,
                                          outcome, response_code, latency_ms, response_body,
                                          error)
    VALUES (p_org, p_delivery, v_delivery.attempts + 1, p_now, p_outcome, p_response_code,
            p_latency_ms, p_body, left(p_error, 500));
    UPDATE singura.webhook_deliveries
       SET attempts = attempts + 1,
           last_response_code = p_response_code,
           state = CASE WHEN claim_token = p_claim THEN p_state ELSE state END,
           next_attempt_at = CASE WHEN claim_token = p_claim
                                  THEN coalesce(p_next_attempt_at, next_attempt_at)
                                  ELSE next_attempt_at END,
           finished_at = CASE WHEN claim_token = p_claim AND p_state <> 'pending' THEN p_now
                              ELSE finished_at END,
           claimed_until = CASE WHEN claim_token = p_claim THEN NULL ELSE claimed_until END,
           claim_token = CASE WHEN claim_token = p_claim THEN NULL ELSE claim_token END
     WHERE organization_id = p_org AND id = p_delivery;

    UPDATE singura.webhook_endpoints
       SET failing_since = CASE WHEN p_outcome = 'delivered' THEN NULL
                                ELSE coalesce(failing_since, p_now) END
     WHERE organization_id = p_org AND id = v_delivery.endpoint_id
    RETURNING * INTO v_endpoint;
    IF NOT FOUND OR NOT v_endpoint.enabled OR p_outcome = 'delivered' THEN
        RETURN '';
    END IF;
    IF p_gone THEN
        v_reason := 'gone';
    ELSIF v_endpoint.failing_since <= p_now - p_disable_after THEN
        v_reason := 'failing';
    ELSE
        RETURN '';
    END IF;
    UPDATE singura.webhook_endpoints SET enabled = false, disabled_reason = v_reason
     WHERE organization_id = p_org AND id = v_endpoint.id;
    -- Never the URL (a query string may carry a consumer's token): ids, times, reasons.
    PERFORM singura.event_append(
        p_org, 'webhook.endpoint_disabled', NULL, NULL,
        jsonb_build_object('endpoint_id', v_endpoint.id, 'reason', v_reason,
                           'failing_since', v_endpoint.failing_since,
                           'response_code', p_response_code, 'disable_time', p_now));
    RETURN v_reason;
END
$$;
REVOKE ALL ON FUNCTION singura.webhook_record_attempt(
    uuid, uuid, uuid, timestamptz, text, integer, double precision, text, text, text,
    timestamptz, boolean, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION singura.webhook_record_attempt(
    uuid, uuid, uuid, timestamptz, text, integer, double precision, text, text, text,
    timestamptz, boolean, interval) TO singura_app;

-- The metric singura_webhook_oldest_undelivered_seconds: when the oldest pending
-- delivery of an enabled endpoint (any organization) was scheduled; NULL if none.
CREATE FUNCTION singura.webhook_oldest_pending() RETURNS timestamptz
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'singura', 'pg_temp'
    AS $$
SELECT min(d.scheduled_at)
  FROM singura.webhook_deliveries d
  JOIN singura.webhook_endpoints w
    ON w.organization_id = d.organization_id AND w.id = d.endpoint_id
 WHERE d.state = 'pending' AND w.enabled;
$$;
REVOKE ALL ON FUNCTION singura.webhook_oldest_pending() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION singura.webhook_oldest_pending() TO singura_app;

-- ListWebhookEndpoints in one round trip (migration 013's scoped functions); never
-- the sealed secrets.
CREATE FUNCTION singura.webhook_endpoints_list_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text,
    p_org uuid, p_after_at timestamptz, p_after_id uuid, p_limit integer)
RETURNS TABLE (organization_id uuid, id uuid, url text, description text, types text[],
               enabled boolean, disabled_reason text, failing_since timestamptz,
               previous_expires_at timestamptz, created_at timestamptz,
               updated_at timestamptz)
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT w.organization_id, w.id, w.url, w.description, w.types, w.enabled, w.disabled_reason,
       w.failing_since, w.previous_expires_at, w.created_at, w.updated_at
  FROM singura.webhook_endpoints w
 WHERE w.organization_id = p_org
   AND (p_after_at IS NULL OR (w.created_at, w.id) > (p_after_at, p_after_id))
 ORDER BY w.created_at, w.id
 LIMIT p_limit;
$$;
GRANT EXECUTE ON FUNCTION singura.webhook_endpoints_list_scoped(
    text, text, text, text, uuid, timestamptz, uuid, integer) TO singura_app;

-- ListWebhookDeliveries in one round trip: an endpoint's deliveries, newest first,
-- optionally in one state, each with its attempts (oldest first) as a JSON array.
CREATE FUNCTION singura.webhook_deliveries_list_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text,
    p_org uuid, p_endpoint uuid, p_state text, p_before_at timestamptz, p_before_id uuid,
    p_limit integer)
RETURNS TABLE (id uuid, endpoint_id uuid, event_cursor bigint, event_type text, state text,
               attempts integer, next_attempt_at timestamptz, created_at timestamptz,
               finished_at timestamptz, last_response_code integer, attempt_list jsonb)
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT d.id, d.endpoint_id, d.event_cursor, d.event_type, d.state, d.attempts,
       d.next_attempt_at, d.created_at, d.finished_at, d.last_response_code,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'attempt', a.attempt, 'attempted_at', a.attempted_at,
                    'outcome', a.outcome, 'response_code', a.response_code,
                    'latency_ms', a.latency_ms, 'response_body', a.response_body,
                    'error', a.error) ORDER BY a.attempt)
                   FROM singura.webhook_attempts a
                  WHERE a.organization_id = d.organization_id AND a.delivery_id = d.id),
                '[]'::jsonb)
  FROM singura.webhook_deliveries d
 WHERE d.organization_id = p_org AND d.endpoint_id = p_endpoint
   AND (p_state IS NULL OR d.state = p_state)
   AND (p_before_at IS NULL OR (d.created_at, d.id) < (p_before_at, p_before_id))
 ORDER BY d.created_at DESC, d.id DESC
 LIMIT p_limit;
$$;
GRANT EXECUTE ON FUNCTION singura.webhook_deliveries_list_scoped(
    text, text, text, text, uuid, uuid, text, timestamptz, uuid, integer) TO singura_app;
