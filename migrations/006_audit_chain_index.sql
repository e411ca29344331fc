-- 006_audit_chain_index: one index that serves every chain, the system chain included.
--
-- Listing, export and verification select one chain by
-- coalesce(organization_id, nil UUID) -- the system chain's key in audit_chain_heads --
-- so that the same indexable predicate works for organizations and for the system
-- chain (`organization_id IS NOT DISTINCT FROM $1` cannot use an index, which made
-- every export batch scan and sort the rest of the table). The expression index is
-- also unique, so positions are unique in the system chain too.
CREATE UNIQUE INDEX audit_logs_chain_key_idx ON singura.audit_logs
    ((coalesce(organization_id, '00000000-0000-0000-0000-000000000000'::uuid)), chain_seq);
DROP INDEX singura.audit_logs_chain_idx;
