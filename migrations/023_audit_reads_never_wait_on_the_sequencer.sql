-- 023_audit_reads_never_wait_on_the_sequencer: a read chains only its own chain, and
-- a sequencer batch costs the same however large the backlog.
--
-- Until now every ListAuditEvents, ExportAuditEvents and VerifyAuditChain first ran
-- the sequencer -- the whole of it: batches of every chain, one after another, until
-- nothing was pending -- behind the one advisory lock that every sequencer takes
-- exclusively. With a backlog of other tenants' events (a burst, a restore, a
-- sequencer that was down), a list call became a sequencer that took turns with the
-- background one until the backlog was gone: 220,000 pending events, and the first
-- ListAuditEvents took 27.5 s (pg_stat_activity: half its time 'Lock / advisory',
-- half chaining). And each batch picked its events with ORDER BY id LIMIT n from the
-- start of audit_pending's primary key, walking the index entries of every event
-- chained since the last VACUUM (and their heap tuples while an older snapshot is
-- open): 55 buffers per pick with nothing chained yet, 377 after 100,000 -- the
-- batch's cost grew with what the backlog had already chained.
--
-- Now:
-- * The sequencers' advisory lock is taken SHARED by every sequencer. Erasure and
--   the checkpoint signer still take it exclusively, so they still exclude every
--   sequencer (and each other). Sequencers exclude each other per chain instead:
--   whoever chains a chain holds its head row (FOR UPDATE) until it commits, so each
--   chain stays linear and gapless. Each takes the heads of its batch in chain-key
--   order, and no sequencer waits on a pending row while it holds a head, so two of
--   them never wait on each other in a cycle.
-- * The background sequencer picks its batch with a keyset on id (audit_sequence_after:
--   the caller passes the last id of its previous batch), FOR UPDATE SKIP LOCKED, so
--   that a batch reads only the index entries of the events it takes, and sequencers of
--   several processes take disjoint batches. An event whose transaction commits after
--   the keyset passed its id is taken by the next run, which starts from the beginning.
-- * A read chains only its own chain (audit_sequence_chain), through a new index on
--   (organization_id, id): a list call its chain's pending events if there are at
--   most p_limit of them (more is a backlog, left to the sequencer: the list returns
--   what is chained); an export or a verification all of them, p_limit per
--   transaction (a keyset on id, as the sequencer's). It waits only for a sequencer batch that has taken events of its own
--   chain -- one bounded batch -- and never for the sequencing of other chains.
-- The guarantees stay: each pending event is taken by exactly one transaction (row
-- lock, then DELETE) and chained in that transaction, which commits or rolls back as
-- one; positions come from the head under its row lock; audit_logs stays insert-only.

-- Taking a pending event is locking its row (SELECT ... FOR UPDATE), which row-level
-- security allows only where an UPDATE policy admits the row. This one admits rows to
-- the schema owner inside the sequencer functions only (singura.audit_sequencing on,
-- as the trigger that diverts inserts checks): elsewhere an UPDATE, the owner's
-- included, still matches no row. Nothing is ever updated: audit_pending_immutable
-- refuses UPDATE to every role.
CREATE POLICY audit_pending_taken ON singura.audit_pending FOR UPDATE
    USING ((SELECT singura.is_schema_owner()
                   AND current_setting('singura.audit_sequencing', true) = 'on'));

-- A chain's pending events in id order, for the read that chains its own chain and for
-- audit_pending_stats (VerifyAuditChain), which until now scanned the whole table.
CREATE INDEX audit_pending_chain_idx ON singura.audit_pending (organization_id, id);

-- Chains the events its caller has just taken out of audit_pending (deleted, in the
-- caller's transaction): chain by chain, each in id order, one head read and one head
-- write per chain, one INSERT for the whole batch (as migration 017 did). Only the
-- SECURITY DEFINER functions below call it, with singura.audit_sequencing on.
CREATE FUNCTION singura.audit_chain_taken(p_taken singura.audit_logs[]) RETURNS integer
LANGUAGE plpgsql
SET search_path = singura, pg_temp
AS $$
DECLARE
    chained singura.audit_logs[] := '{}';
    e singura.audit_logs;
    chain_keys uuid[];
    k uuid;
    current_key uuid;
    head_seq bigint;
    head_hash bytea;
    moved_keys uuid[] := '{}';
    moved_seqs bigint[] := '{}';
    moved_hashes bytea[] := '{}';
    nil constant uuid := '00000000-0000-0000-0000-000000000000';
    genesis constant bytea := '\x0000000000000000000000000000000000000000000000000000000000000000';
BEGIN
    IF p_taken IS NULL OR cardinality(p_taken) = 0 THEN
        RETURN 0;
    END IF;
    SELECT array_agg(DISTINCT coalesce(t.organization_id, nil) ORDER BY coalesce(t.organization_id, nil))
      INTO chain_keys FROM unnest(p_taken) t;
    -- Hold every head this batch moves until commit, in key order. The heads that
    -- exist are locked first; a chain's first event then creates its head (also in
    -- key order; a head another sequencer creates meanwhile is waited for, then
    -- locked like the others).
    PERFORM 1 FROM audit_chain_heads h WHERE h.chain_key = ANY (chain_keys)
      ORDER BY h.chain_key FOR UPDATE;
    INSERT INTO audit_chain_heads (chain_key, last_seq, last_hash)
    SELECT n.k, 0, genesis
      FROM unnest(chain_keys) AS n(k)
     WHERE NOT EXISTS (SELECT 1 FROM audit_chain_heads h WHERE h.chain_key = n.k)
     ORDER BY n.k
    ON CONFLICT (chain_key) DO NOTHING;
    PERFORM 1 FROM audit_chain_heads h WHERE h.chain_key = ANY (chain_keys)
      ORDER BY h.chain_key FOR UPDATE;
    FOR e IN SELECT * FROM unnest(p_taken) t ORDER BY coalesce(t.organization_id, nil), t.id LOOP
        k := coalesce(e.organization_id, nil);
        IF current_key IS DISTINCT FROM k THEN
            IF current_key IS NOT NULL THEN
                moved_keys := moved_keys || current_key;
                moved_seqs := moved_seqs || head_seq;
                moved_hashes := moved_hashes || head_hash;
            END IF;
            current_key := k;
            SELECT h.last_seq, h.last_hash INTO STRICT head_seq, head_hash
              FROM audit_chain_heads h WHERE h.chain_key = k;
        END IF;
        e.chain_seq := head_seq + 1;
        e.prev_hash := head_hash;
        e.hash := sha256(head_hash || convert_to(singura.audit_canonical(e), 'UTF8'));
        chained := chained || e;
        head_seq := e.chain_seq;
        head_hash := e.hash;
    END LOOP;
    moved_keys := moved_keys || current_key;
    moved_seqs := moved_seqs || head_seq;
    moved_hashes := moved_hashes || head_hash;
    INSERT INTO audit_logs OVERRIDING SYSTEM VALUE SELECT * FROM unnest(chained);
    UPDATE audit_chain_heads h SET last_seq = m.seq, last_hash = m.hash
      FROM unnest(moved_keys, moved_seqs, moved_hashes) AS m(k, seq, hash)
     WHERE h.chain_key = m.k;
    RETURN cardinality(chained);
END
$$;
REVOKE ALL ON FUNCTION singura.audit_chain_taken(singura.audit_logs[]) FROM PUBLIC;

-- The background sequencer: chains up to p_limit committed pending events of every
-- chain with an id above p_after, oldest id first, skipping events another sequencer
-- has taken; returns how many and the last id taken (p_after if none), which the
-- caller passes to its next batch.
CREATE FUNCTION singura.audit_sequence_after(p_after bigint, p_limit integer,
                                             OUT chained integer, OUT last_id bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = singura, pg_temp
-- Erasure or a checkpoint signer holds the lock for moments; never wait long on one.
SET lock_timeout = '1s'
-- The pick must walk the index in id order and stop after p_limit entries. A bitmap
-- or sequential scan reads every pending event above p_after and sorts them: the whole
-- backlog, per batch. The planner chose that on a table it had no statistics for (a
-- fresh database: 11,000, 10,000, 9,000 ... index entries read per batch of 1,000 out
-- of 10,000 pending); every statement here is an index lookup or a walk anyway.
SET enable_bitmapscan = off
SET enable_seqscan = off
AS $$
DECLARE
    taken singura.audit_logs[];
BEGIN
    PERFORM pg_advisory_xact_lock_shared(1397114627);
    PERFORM set_config('singura.audit_sequencing', 'on', true);
    WITH t AS (
        DELETE FROM audit_pending
         WHERE id = ANY (ARRAY(SELECT p.id FROM audit_pending p
                                WHERE p.id > p_after
                                ORDER BY p.id LIMIT p_limit
                                  FOR UPDATE SKIP LOCKED))
        RETURNING *
    )
    SELECT array_agg(ROW(t.*)::singura.audit_logs), max(t.id) INTO taken, last_id FROM t;
    chained := singura.audit_chain_taken(taken);
    last_id := coalesce(last_id, p_after);
    PERFORM set_config('singura.audit_sequencing', 'off', true);
END
$$;
REVOKE ALL ON FUNCTION singura.audit_sequence_after(bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION singura.audit_sequence_after(bigint, integer) TO singura_app;

-- One batch from the first pending event (what commands and tests call to chain
-- everything: call it until it returns 0).
CREATE OR REPLACE FUNCTION singura.audit_sequence(p_limit integer) RETURNS integer
LANGUAGE sql SECURITY DEFINER
SET search_path = singura, pg_temp
AS $$
SELECT s.chained FROM singura.audit_sequence_after(0, p_limit) s;
$$;

-- A read's catch-up: chains up to p_limit pending events of one chain (p_org; NULL
-- for the system chain) with an id above p_after, oldest id first; returns how many
-- and the last id taken (p_after if none), the next call's p_after. With
-- p_skip_backlog, when more than p_limit are pending (a backlog: the sequencer's work,
-- which a list call does not take on) it chains nothing and returns -1. FOR UPDATE
-- without SKIP LOCKED: an event of this chain that a sequencer batch has taken is
-- waited for (that one batch), so the caller then sees it chained.
--
-- The count walks the chain's index entries from the newest: the oldest ones are those
-- chained (deleted) since the last VACUUM, which a walk from the oldest would read
-- first, call after call. When it finds at most p_limit, the oldest of them bounds
-- the pick from below for the same reason.
CREATE FUNCTION singura.audit_sequence_chain(p_org uuid, p_after bigint, p_limit integer,
                                             p_skip_backlog boolean,
                                             OUT chained integer, OUT last_id bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = singura, pg_temp
SET lock_timeout = '1s'
-- As above: the count stops after p_limit + 1 index entries of the chain, and the pick
-- after p_limit, whatever the chain's backlog.
SET enable_bitmapscan = off
SET enable_seqscan = off
AS $$
DECLARE
    waiting bigint;
    oldest bigint;
    lower bigint := p_after;
    taken singura.audit_logs[];
BEGIN
    last_id := p_after;
    -- organization_id = p_org and IS NULL (never IS NOT DISTINCT FROM): index conditions.
    IF p_org IS NULL THEN
        SELECT count(*), min(s.id) INTO waiting, oldest FROM (
            SELECT p.id FROM audit_pending p WHERE p.organization_id IS NULL AND p.id > p_after
             ORDER BY p.id DESC LIMIT p_limit + 1) s;
    ELSE
        SELECT count(*), min(s.id) INTO waiting, oldest FROM (
            SELECT p.id FROM audit_pending p WHERE p.organization_id = p_org AND p.id > p_after
             ORDER BY p.id DESC LIMIT p_limit + 1) s;
    END IF;
    IF waiting = 0 THEN
        chained := 0;
        RETURN;
    ELSIF waiting > p_limit AND p_skip_backlog THEN
        chained := -1;
        RETURN;
    ELSIF waiting <= p_limit THEN
        lower := oldest - 1;
    END IF;
    PERFORM pg_advisory_xact_lock_shared(1397114627);
    PERFORM set_config('singura.audit_sequencing', 'on', true);
    IF p_org IS NULL THEN
        WITH t AS (
            DELETE FROM audit_pending
             WHERE id = ANY (ARRAY(SELECT p.id FROM audit_pending p
                                    WHERE p.organization_id IS NULL AND p.id > lower
                                    ORDER BY p.id LIMIT p_limit FOR UPDATE))
            RETURNING *
        )
        SELECT array_agg(ROW(t.*)::singura.audit_logs), max(t.id) INTO taken, last_id FROM t;
    ELSE
        WITH t AS (
            DELETE FROM audit_pending
             WHERE id = ANY (ARRAY(SELECT p.id FROM audit_pending p
                                    WHERE p.organization_id = p_org AND p.id > lower
                                    ORDER BY p.id LIMIT p_limit FOR UPDATE))
            RETURNING *
        )
        SELECT array_agg(ROW(t.*)::singura.audit_logs), max(t.id) INTO taken, last_id FROM t;
    END IF;
    chained := singura.audit_chain_taken(taken);
    last_id := coalesce(last_id, p_after);
    PERFORM set_config('singura.audit_sequencing', 'off', true);
END
$$;
REVOKE ALL ON FUNCTION singura.audit_sequence_chain(uuid, bigint, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION singura.audit_sequence_chain(uuid, bigint, integer, boolean)
    TO singura_app;
