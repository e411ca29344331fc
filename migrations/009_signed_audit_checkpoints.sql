-- 009_signed_audit_checkpoints: the vault signs the heads of its audit hash chains.
--
-- The hash chain shows an edit, a deletion or a reordering to anyone who recomputes
-- it -- unless whoever changed it also recomputed every later hash and the head, which
-- a superuser can. A signed checkpoint fixes (chain, position, hash, time) under the
-- vault's Ed25519 audit signing key, which never enters the database: a chain
-- re-hashed after a checkpoint no longer matches it, and the checkpoints themselves
-- form a chain (each signs its predecessor's signature), so one removed from the
-- middle shows too. What a checkpoint does and does not prove: docs/audit.md.
CREATE TABLE singura.audit_signed_checkpoints (
    -- The organization id, or the nil UUID for the system chain (as audit_chain_heads).
    chain_key          uuid NOT NULL,
    chain_seq          bigint NOT NULL CONSTRAINT audit_signed_checkpoints_seq_positive
        CHECK (chain_seq >= 1),
    chain_hash         bytea NOT NULL CONSTRAINT audit_signed_checkpoints_hash_size
        CHECK (octet_length(chain_hash) = 32),
    signed_at          timestamptz NOT NULL,
    key_id             text NOT NULL,
    -- The signature of the chain's previous checkpoint; NULL for its first.
    previous_signature bytea,
    signature          bytea NOT NULL CONSTRAINT audit_signed_checkpoints_signature_size
        CHECK (octet_length(signature) = 64),
    PRIMARY KEY (chain_key, chain_seq)
);
-- Ids, positions and hashes only (like audit_chain_heads): no row-level security.
-- Append-only for the service: no UPDATE or DELETE is granted.
GRANT SELECT, INSERT ON singura.audit_signed_checkpoints TO singura_app;

-- GDPR erasure also drops the erased organization's checkpoints.
CREATE OR REPLACE FUNCTION singura.audit_erase_organization(p_org uuid, p_actor text)
RETURNS bigint
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
    DELETE FROM singura.audit_signed_checkpoints WHERE chain_key = p_org;
    INSERT INTO singura.audit_logs (organization_id, actor, action, resource_type, resource_id,
                                    request_id, details)
    VALUES (NULL, coalesce(p_actor, 'system'), 'organization.erased', 'organization',
            p_org::text, nullif(current_setting('singura.request_id', true), ''),
            jsonb_build_object('audit_events_erased', n));
    RETURN n;
END
$$;
