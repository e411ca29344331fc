-- 010_audit_read_indexes: audit reads use the chain index under row-level security.
--
-- Migration 006 made the reads select a chain with
-- coalesce(organization_id, nil UUID) = $1 over an expression index. Under row-level
-- security that predicate is never an index condition: the planner runs a query's own
-- conditions before the policy's only when they are leakproof, and it treats COALESCE
-- as possibly leaky. So as the service role every list call, export batch and verify
-- batch scanned the rows of every tenant and sorted them (0.2 s per call with 300,000
-- events in the table; export and verify quadratic in the chain's length), while the
-- superuser, who bypasses the policy, used the index.
--
-- The reads now select the chain with organization_id = $1 (the system chain with
-- organization_id IS NULL): a uuid equality and a null test are leakproof, so they
-- become the index condition, and the policy, which is unchanged, filters only the
-- rows of the chain asked for. This index serves both forms in chain order. NULLS NOT
-- DISTINCT keeps what 006's index guaranteed: one event per position in every chain,
-- the system chain (organization_id NULL) included.
CREATE UNIQUE INDEX audit_logs_chain_idx ON singura.audit_logs (organization_id, chain_seq)
    NULLS NOT DISTINCT;
DROP INDEX singura.audit_logs_chain_key_idx;
