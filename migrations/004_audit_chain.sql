-- 004_audit_chain: automatic, append-only, hash-chained audit trail; retention and erasure.
--
-- Every insert into audit_logs is chained, by a BEFORE INSERT trigger, to the
-- previous event of its organization (the "system" chain for events of no
-- organization): sequence = previous + 1, hash = SHA-256(previous hash ||
-- canonical encoding of the row). Appends to one chain are serialized by a row
-- lock on its head, across every vault process, without serializing different
-- organizations. AFTER triggers on the tenant tables record every data change;
-- nothing can UPDATE, DELETE or TRUNCATE audit_logs except the two narrowly
-- privileged functions below (retention pruning and GDPR erasure).

-- Is the current role the schema owner (or a member of it)? True inside the
-- SECURITY DEFINER functions of this file, never for the service role (the
-- vault refuses to serve as a member of the owner).
CREATE FUNCTION singura.is_schema_owner() RETURNS boolean
    LANGUAGE sql STABLE
    AS $$ SELECT pg_has_role(current_user,
                             (SELECT nspowner FROM pg_namespace WHERE nspname = 'singura'),
                             'MEMBER') $$;
GRANT EXECUTE ON FUNCTION singura.is_schema_owner() TO singura_app;

CREATE TABLE singura.audit_chain_heads (
    -- The organization id, or the nil UUID for the system chain.
    chain_key uuid PRIMARY KEY,
    last_seq  bigint NOT NULL,
    last_hash bytea NOT NULL
);

-- Readable by the service so that verification notices missing newest events.
GRANT SELECT ON singura.audit_chain_heads TO singura_app;

-- Left by retention pruning, so the chain after the pruned prefix still verifies.
CREATE TABLE singura.audit_checkpoints (
    chain_key          uuid PRIMARY KEY,
    pruned_through_seq bigint NOT NULL,
    pruned_count       bigint NOT NULL,
    last_pruned_hash   bytea NOT NULL,
    pruned_at          timestamptz NOT NULL
);
GRANT SELECT ON singura.audit_checkpoints TO singura_app;

ALTER TABLE singura.audit_logs ADD COLUMN chain_seq bigint;

-- The canonical encoding that is hashed: a JSON array of the row's fields
-- (jsonb's text form is deterministic), timestamps as integer microseconds.
CREATE FUNCTION singura.audit_canonical(e singura.audit_logs) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT jsonb_build_array(
              e.id, e.organization_id, e.chain_seq,
              (extract(epoch FROM e.occurred_at) * 1000000)::bigint,
              e.actor, e.action, e.resource_type, e.resource_id, e.request_id,
              e.outcome, e.details)::text $$;
GRANT EXECUTE ON FUNCTION singura.audit_canonical(singura.audit_logs) TO singura_app;

-- Policies: the owner's SECURITY DEFINER functions may append to and read any chain.
DROP POLICY audit_logs_read ON singura.audit_logs;
DROP POLICY audit_logs_append ON singura.audit_logs;
CREATE POLICY audit_logs_read ON singura.audit_logs FOR SELECT
    USING (organization_id = singura.current_organization_id()
           OR (organization_id IS NULL AND singura.is_admin_scope())
           OR (SELECT singura.is_schema_owner()));
CREATE POLICY audit_logs_append ON singura.audit_logs FOR INSERT
    WITH CHECK (organization_id = singura.current_organization_id()
                OR (organization_id IS NULL AND singura.is_admin_scope())
                OR (SELECT singura.is_schema_owner()));
CREATE POLICY audit_logs_maintenance ON singura.audit_logs FOR DELETE
    USING ((SELECT singura.is_schema_owner()));

-- Chain the events recorded before this migration, in id order.
DO $$
DECLARE
    r singura.audit_logs%ROWTYPE;
    heads jsonb := '{}';
    k text;
    prev bytea;
    seq bigint;
BEGIN
    FOR r IN SELECT * FROM singura.audit_logs ORDER BY id LOOP
        k := coalesce(r.organization_id, '00000000-0000-0000-0000-000000000000')::text;
        seq := coalesce((heads -> k ->> 'seq')::bigint, 0) + 1;
        prev := coalesce(decode(heads -> k ->> 'hash', 'hex'), '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
        r.chain_seq := seq;
        r.prev_hash := prev;
        r.hash := sha256(prev || convert_to(singura.audit_canonical(r), 'UTF8'));
        UPDATE singura.audit_logs SET chain_seq = r.chain_seq, prev_hash = r.prev_hash, hash = r.hash
         WHERE id = r.id;
        heads := heads || jsonb_build_object(k, jsonb_build_object('seq', seq, 'hash', encode(r.hash, 'hex')));
    END LOOP;
    INSERT INTO singura.audit_chain_heads (chain_key, last_seq, last_hash)
    SELECT key::uuid, (value ->> 'seq')::bigint, decode(value ->> 'hash', 'hex')
      FROM jsonb_each(heads);
END
$$;

ALTER TABLE singura.audit_logs ALTER COLUMN chain_seq SET NOT NULL;
ALTER TABLE singura.audit_logs ALTER COLUMN prev_hash SET NOT NULL;
ALTER TABLE singura.audit_logs ALTER COLUMN hash SET NOT NULL;
DROP INDEX singura.audit_logs_org_idx;
-- Listing (newest first), export (oldest first) and verification walk one chain
-- by sequence; also enforces one event per position in an organization's chain.
CREATE UNIQUE INDEX audit_logs_chain_idx ON singura.audit_logs (organization_id, chain_seq);
-- Retention pruning finds old events by time.
CREATE INDEX audit_logs_occurred_idx ON singura.audit_logs (occurred_at);

CREATE FUNCTION singura.audit_chain_append() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
DECLARE
    k uuid := coalesce(NEW.organization_id, '00000000-0000-0000-0000-000000000000');
    head singura.audit_chain_heads%ROWTYPE;
BEGIN
    SELECT * INTO head FROM singura.audit_chain_heads WHERE chain_key = k FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO singura.audit_chain_heads (chain_key, last_seq, last_hash)
        VALUES (k, 0, '\x0000000000000000000000000000000000000000000000000000000000000000')
        ON CONFLICT (chain_key) DO NOTHING;
        SELECT * INTO head FROM singura.audit_chain_heads WHERE chain_key = k FOR UPDATE;
    END IF;
    NEW.chain_seq := head.last_seq + 1;
    NEW.prev_hash := head.last_hash;
    NEW.hash := sha256(NEW.prev_hash || convert_to(singura.audit_canonical(NEW), 'UTF8'));
    UPDATE singura.audit_chain_heads SET last_seq = NEW.chain_seq, last_hash = NEW.hash
     WHERE chain_key = k;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_logs_chain BEFORE INSERT ON singura.audit_logs
    FOR EACH ROW EXECUTE FUNCTION singura.audit_chain_append();

-- Append-only: UPDATE, DELETE and TRUNCATE raise, for every role, unless a
-- maintenance function of the schema owner has opened this transaction for it.
CREATE FUNCTION singura.audit_immutable() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('singura.audit_maintenance', true) = 'on'
       AND singura.is_schema_owner() THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_logs is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_logs_immutable BEFORE UPDATE OR DELETE ON singura.audit_logs
    FOR EACH ROW EXECUTE FUNCTION singura.audit_immutable();
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON singura.audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION singura.audit_immutable();

-- Record every data change of the tenant tables. Only ids, types, versions,
-- statuses and changed column *names* are recorded, never values of secrets.
CREATE FUNCTION singura.audit_row_change() RETURNS trigger
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

CREATE TRIGGER organizations_audit AFTER INSERT OR UPDATE OR DELETE ON singura.organizations
    FOR EACH ROW EXECUTE FUNCTION singura.audit_row_change('organization');
CREATE TRIGGER platform_connections_audit
    AFTER INSERT OR UPDATE OR DELETE ON singura.platform_connections
    FOR EACH ROW EXECUTE FUNCTION singura.audit_row_change('connection');
CREATE TRIGGER encrypted_credentials_audit
    AFTER INSERT OR UPDATE OR DELETE ON singura.encrypted_credentials
    FOR EACH ROW EXECUTE FUNCTION singura.audit_row_change('credential');
CREATE TRIGGER api_keys_audit AFTER INSERT OR UPDATE OR DELETE ON singura.api_keys
    FOR EACH ROW EXECUTE FUNCTION singura.audit_row_change('api_key');
CREATE TRIGGER data_keys_audit AFTER INSERT OR UPDATE OR DELETE ON singura.data_keys
    FOR EACH ROW EXECUTE FUNCTION singura.audit_row_change('data_key');

-- Retention: delete each chain's events older than p_before (a prefix of the
-- chain), leaving a checkpoint so what remains still verifies, and record the
-- prune itself in the system chain.
CREATE FUNCTION singura.audit_prune(p_before timestamptz, p_actor text)
RETURNS TABLE (chain_key uuid, pruned bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = singura, pg_temp
AS $$
DECLARE
    r record;
    last_hash bytea;
    n bigint;
    total bigint := 0;
    chains integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(1397114626);  -- one prune at a time
    PERFORM set_config('singura.audit_maintenance', 'on', true);
    FOR r IN
        SELECT a.organization_id AS org, max(a.chain_seq) AS through
          FROM singura.audit_logs a
         WHERE a.occurred_at < p_before
         GROUP BY a.organization_id
    LOOP
        SELECT a.hash INTO last_hash FROM singura.audit_logs a
         WHERE a.organization_id IS NOT DISTINCT FROM r.org AND a.chain_seq = r.through;
        DELETE FROM singura.audit_logs a
         WHERE a.organization_id IS NOT DISTINCT FROM r.org AND a.chain_seq <= r.through;
        GET DIAGNOSTICS n = ROW_COUNT;
        INSERT INTO singura.audit_checkpoints AS c
               (chain_key, pruned_through_seq, pruned_count, last_pruned_hash, pruned_at)
        VALUES (coalesce(r.org, '00000000-0000-0000-0000-000000000000'), r.through, n,
                last_hash, now())
        ON CONFLICT ON CONSTRAINT audit_checkpoints_pkey DO UPDATE
           SET pruned_through_seq = EXCLUDED.pruned_through_seq,
               pruned_count = c.pruned_count + EXCLUDED.pruned_count,
               last_pruned_hash = EXCLUDED.last_pruned_hash,
               pruned_at = EXCLUDED.pruned_at;
        chain_key := coalesce(r.org, '00000000-0000-0000-0000-000000000000');
        pruned := n;
        total := total + n;
        chains := chains + 1;
        RETURN NEXT;
    END LOOP;
    PERFORM set_config('singura.audit_maintenance', 'off', true);
    INSERT INTO singura.audit_logs (organization_id, actor, action, resource_type, details)
    VALUES (NULL, coalesce(p_actor, 'system'), 'audit.pruned', 'audit_log',
            jsonb_build_object('before', p_before, 'events', total, 'chains', chains));
END
$$;
REVOKE ALL ON FUNCTION singura.audit_prune(timestamptz, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION singura.audit_prune(timestamptz, text) TO singura_app;

-- GDPR erasure: drop the whole audit trail of an organization that no longer
-- exists (it may hold personal data: free-text reasons, who did what), and
-- leave one non-personal system event saying that it was erased.
CREATE FUNCTION singura.audit_erase_organization(p_org uuid, p_actor text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = singura, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    -- Refuse for a live organization: erasure follows deletion, never replaces it.
    PERFORM set_config('singura.organization_id', p_org::text, true);
    IF EXISTS (SELECT 1 FROM singura.organizations WHERE id = p_org) THEN
        RAISE EXCEPTION 'organization % still exists; delete it first', p_org
            USING ERRCODE = 'object_in_use';
    END IF;
    PERFORM set_config('singura.audit_maintenance', 'on', true);
    DELETE FROM singura.audit_logs WHERE organization_id = p_org;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM set_config('singura.audit_maintenance', 'off', true);
    DELETE FROM singura.audit_chain_heads WHERE chain_key = p_org;
    DELETE FROM singura.audit_checkpoints WHERE chain_key = p_org;
    INSERT INTO singura.audit_logs (organization_id, actor, action, resource_type, resource_id,
                                    request_id, details)
    VALUES (NULL, coalesce(p_actor, 'system'), 'organization.erased', 'organization',
            p_org::text, nullif(current_setting('singura.request_id', true), ''),
            jsonb_build_object('audit_events_erased', n));
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION singura.audit_erase_organization(uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION singura.audit_erase_organization(uuid, text) TO singura_app;
