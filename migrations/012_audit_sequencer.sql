-- 012_audit_sequencer: audit appends that never wait on an organization-wide lock.
--
-- Until now a BEFORE INSERT trigger chained each event to its organization's head
-- inside the request's transaction: it locked the head row and kept it locked until
-- COMMIT, across the request's remaining round trips and its WAL flush, so every
-- store and reveal of one tenant queued behind the previous one.
--
-- Now the request's transaction only records its event, durably and unchained, in
-- audit_pending (same columns as audit_logs, the chain fields empty). A sequencer --
-- singura.audit_sequence(), called by the vault processes, one at a time under an
-- advisory lock -- moves committed pending events into audit_logs in batches,
-- chaining each to its chain's head, and moves each head once per batch. Audit-or-fail
-- is unchanged: the event commits with the request or the request fails. What a
-- sequencer does commits or rolls back as one transaction, so one killed mid-batch
-- leaves the chain as it was and the events still pending.
--
-- Every existing writer keeps inserting into audit_logs (the service's audit_append,
-- the row-change triggers, pruning, erasure, rewrap): the BEFORE INSERT trigger
-- diverts each new row to audit_pending. Only the sequencer, running as the schema
-- owner with singura.audit_sequencing on, inserts chained rows into audit_logs, which
-- so stays insert-only (no row is ever updated, nothing to vacuum).

CREATE TABLE singura.audit_pending (LIKE singura.audit_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE singura.audit_pending ADD PRIMARY KEY (id);
ALTER TABLE singura.audit_pending ALTER COLUMN chain_seq DROP NOT NULL;
ALTER TABLE singura.audit_pending ALTER COLUMN prev_hash DROP NOT NULL;
ALTER TABLE singura.audit_pending ALTER COLUMN hash DROP NOT NULL;
-- The chain fields are the sequencer's to fill: a pending row never carries them.
ALTER TABLE singura.audit_pending ADD CONSTRAINT audit_pending_unchained
    CHECK (chain_seq IS NULL AND prev_hash IS NULL AND hash IS NULL);

-- The same fences as audit_logs: a tenant records and sees only its own events.
ALTER TABLE singura.audit_pending ENABLE ROW LEVEL SECURITY;
ALTER TABLE singura.audit_pending FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_pending_read ON singura.audit_pending FOR SELECT
    USING (organization_id = singura.current_organization_id()
           OR (organization_id IS NULL AND singura.is_admin_scope())
           OR (SELECT singura.is_schema_owner()));
CREATE POLICY audit_pending_append ON singura.audit_pending FOR INSERT
    WITH CHECK (organization_id = singura.current_organization_id()
                OR (organization_id IS NULL AND singura.is_admin_scope())
                OR (SELECT singura.is_schema_owner()));
CREATE POLICY audit_pending_sequenced ON singura.audit_pending FOR DELETE
    USING ((SELECT singura.is_schema_owner()));
GRANT SELECT, INSERT ON singura.audit_pending TO singura_app;

-- Pending events leave only through the sequencer (or erasure): UPDATE, DELETE and
-- TRUNCATE raise for every role otherwise, the schema owner included. One guard for
-- both tables: audit_logs keeps its rule (DELETE only in a maintenance function).
CREATE OR REPLACE FUNCTION singura.audit_immutable() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'DELETE' AND singura.is_schema_owner()
       AND (current_setting('singura.audit_maintenance', true) = 'on'
            OR (TG_TABLE_NAME = 'audit_pending'
                AND current_setting('singura.audit_sequencing', true) = 'on')) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_pending_immutable BEFORE UPDATE OR DELETE ON singura.audit_pending
    FOR EACH ROW EXECUTE FUNCTION singura.audit_immutable();
CREATE TRIGGER audit_pending_no_truncate BEFORE TRUNCATE ON singura.audit_pending
    FOR EACH STATEMENT EXECUTE FUNCTION singura.audit_immutable();

-- Divert every new audit_logs row to audit_pending, keeping the id and time it was
-- given. SECURITY INVOKER on purpose: the pending row is inserted as the caller, so
-- audit_pending's policy holds the caller to its own tenant exactly as audit_logs'
-- did. Chain fields a caller supplies are dropped: only the sequencer chains.
CREATE FUNCTION singura.audit_defer_to_sequencer() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = singura, pg_temp
    AS $$
BEGIN
    IF current_setting('singura.audit_sequencing', true) = 'on' AND singura.is_schema_owner() THEN
        RETURN NEW;  -- the sequencer's own, chained insert
    END IF;
    NEW.chain_seq := NULL;
    NEW.prev_hash := NULL;
    NEW.hash := NULL;
    INSERT INTO singura.audit_pending VALUES (NEW.*);
    RETURN NULL;
END
$$;
DROP TRIGGER audit_logs_chain ON singura.audit_logs;
DROP FUNCTION singura.audit_chain_append();
CREATE TRIGGER audit_logs_pending BEFORE INSERT ON singura.audit_logs
    FOR EACH ROW EXECUTE FUNCTION singura.audit_defer_to_sequencer();

-- The sequencer. Chains up to p_limit committed pending events, oldest id first,
-- and returns how many it chained. One sequencer runs at a time, cluster-wide: the
-- transaction-scoped advisory lock 1397114627 (erasure takes it too). A caller that
-- finds it held waits for the running batch (bounded by lock_timeout below), then
-- chains whatever that batch left, its own committed events included.
CREATE FUNCTION singura.audit_sequence(p_limit integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = singura, pg_temp
-- A stuck sequencer must not stall the callers that chain before they read.
SET lock_timeout = '1s'
AS $$
DECLARE
    batch singura.audit_logs[];
    e singura.audit_logs;
    k uuid;
    current_key uuid;
    head_seq bigint;
    head_hash bytea;
    nil constant uuid := '00000000-0000-0000-0000-000000000000';
    genesis constant bytea := '\x0000000000000000000000000000000000000000000000000000000000000000';
BEGIN
    PERFORM pg_advisory_xact_lock(1397114627);
    PERFORM set_config('singura.audit_sequencing', 'on', true);
    -- Chain by chain, each in id order: one head read and one head write per chain.
    WITH taken AS (
        DELETE FROM singura.audit_pending
         WHERE id IN (SELECT id FROM singura.audit_pending ORDER BY id LIMIT p_limit)
        RETURNING *
    )
    SELECT array_agg(ROW(t.*)::singura.audit_logs ORDER BY coalesce(t.organization_id, nil), t.id)
      INTO batch FROM taken t;
    IF batch IS NULL THEN
        PERFORM set_config('singura.audit_sequencing', 'off', true);
        RETURN 0;
    END IF;
    FOREACH e IN ARRAY batch LOOP
        k := coalesce(e.organization_id, nil);
        IF current_key IS DISTINCT FROM k THEN
            IF current_key IS NOT NULL THEN
                UPDATE singura.audit_chain_heads SET last_seq = head_seq, last_hash = head_hash
                 WHERE chain_key = current_key;
            END IF;
            current_key := k;
            SELECT h.last_seq, h.last_hash INTO head_seq, head_hash
              FROM singura.audit_chain_heads h WHERE h.chain_key = k;
            IF NOT FOUND THEN
                INSERT INTO singura.audit_chain_heads (chain_key, last_seq, last_hash)
                VALUES (k, 0, genesis);
                head_seq := 0;
                head_hash := genesis;
            END IF;
        END IF;
        e.chain_seq := head_seq + 1;
        e.prev_hash := head_hash;
        e.hash := sha256(head_hash || convert_to(singura.audit_canonical(e), 'UTF8'));
        INSERT INTO singura.audit_logs OVERRIDING SYSTEM VALUE SELECT (e).*;
        head_seq := e.chain_seq;
        head_hash := e.hash;
    END LOOP;
    UPDATE singura.audit_chain_heads SET last_seq = head_seq, last_hash = head_hash
     WHERE chain_key = current_key;
    PERFORM set_config('singura.audit_sequencing', 'off', true);
    RETURN cardinality(batch);
END
$$;
REVOKE ALL ON FUNCTION singura.audit_sequence(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION singura.audit_sequence(integer) TO singura_app;

-- Erasure also drops the organization's events still pending, under the sequencer's
-- lock, so that no batch running beside it recreates the erased chain.
CREATE OR REPLACE FUNCTION singura.audit_erase_organization(p_org uuid, p_actor text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = singura, pg_temp
AS $$
DECLARE
    n bigint;
    pending bigint;
BEGIN
    -- Refuse for a live organization: erasure follows deletion, never replaces it.
    PERFORM set_config('singura.organization_id', p_org::text, true);
    IF EXISTS (SELECT 1 FROM singura.organizations WHERE id = p_org) THEN
        RAISE EXCEPTION 'organization % still exists; delete it first', p_org
            USING ERRCODE = 'object_in_use';
    END IF;
    PERFORM pg_advisory_xact_lock(1397114627);
    PERFORM set_config('singura.audit_maintenance', 'on', true);
    DELETE FROM singura.audit_logs WHERE organization_id = p_org;
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM singura.audit_pending WHERE organization_id = p_org;
    GET DIAGNOSTICS pending = ROW_COUNT;
    PERFORM set_config('singura.audit_maintenance', 'off', true);
    DELETE FROM singura.audit_chain_heads WHERE chain_key = p_org;
    DELETE FROM singura.audit_checkpoints WHERE chain_key = p_org;
    DELETE FROM singura.audit_signed_checkpoints WHERE chain_key = p_org;
    INSERT INTO singura.audit_logs (organization_id, actor, action, resource_type, resource_id,
                                    request_id, details)
    VALUES (NULL, coalesce(p_actor, 'system'), 'organization.erased', 'organization',
            p_org::text, nullif(current_setting('singura.request_id', true), ''),
            jsonb_build_object('audit_events_erased', n + pending));
    RETURN n + pending;
END
$$;
