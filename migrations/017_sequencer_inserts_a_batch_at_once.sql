-- 017_sequencer_inserts_a_batch_at_once: the audit sequencer writes each batch's
-- chained events with one INSERT instead of one per event.
--
-- Migration 012's singura.audit_sequence chained each event in its loop and inserted
-- it there, so every event paid a statement's start-up in PL/pgSQL and the append
-- policy's initplan (is_schema_owner) on its own. The loop now only computes each
-- event's chain fields -- they depend on the previous event's hash, so that part stays
-- sequential -- and collects the events; one INSERT ... SELECT FROM unnest writes them.
-- Measured on the reference machine (backend CPU, 5,000 pending events chained in
-- batches of 1,000, one connection): 74-96 us per event before, 40-44 us after.
-- Everything else is unchanged: the same advisory lock, the same order (chain by
-- chain, each in id order), one head read and write per chain, and the batch still
-- commits or rolls back as one transaction, so a sequencer killed mid-batch leaves the
-- chain as it was and its events pending.

CREATE OR REPLACE FUNCTION singura.audit_sequence(p_limit integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = singura, pg_temp
-- A stuck sequencer must not stall the callers that chain before they read.
SET lock_timeout = '1s'
AS $$
DECLARE
    batch singura.audit_logs[];
    chained singura.audit_logs[] := '{}';
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
        chained := chained || e;
        head_seq := e.chain_seq;
        head_hash := e.hash;
    END LOOP;
    INSERT INTO singura.audit_logs OVERRIDING SYSTEM VALUE SELECT * FROM unnest(chained);
    UPDATE singura.audit_chain_heads SET last_seq = head_seq, last_hash = head_hash
     WHERE chain_key = current_key;
    PERFORM set_config('singura.audit_sequencing', 'off', true);
    RETURN cardinality(batch);
END
$$;
