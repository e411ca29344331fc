-- Signed audit checkpoints (migration 009). Chains are keyed as in audit_chain_heads:
-- the organization id, or the nil UUID for the system chain.

-- name: audit_signing_lock_try
-- The periodic signer: one vault process per round; the others skip it.
SELECT pg_try_advisory_xact_lock(1397114627);

-- name: audit_signing_lock
-- An on-demand checkpoint waits for a round in progress instead.
SELECT pg_advisory_xact_lock(1397114627);

-- name: audit_heads_to_sign
-- Each chain whose head moved past its newest checkpoint (or that has none), with
-- that checkpoint's signature, which the next one signs too, and its key (the next
-- one names it when another key signs it: after a rotation).
SELECT h.chain_key, h.last_seq, h.last_hash, c.signature AS previous_signature,
       c.key_id AS previous_key_id
  FROM audit_chain_heads h
  LEFT JOIN LATERAL (SELECT s.chain_seq, s.signature, s.key_id FROM audit_signed_checkpoints s
                      WHERE s.chain_key = h.chain_key
                      ORDER BY s.chain_seq DESC LIMIT 1) c ON true
 WHERE ($1::uuid IS NULL OR h.chain_key = $1)
   AND h.last_seq > 0
   AND (c.chain_seq IS NULL OR c.chain_seq < h.last_seq)
 ORDER BY h.chain_key;

-- name: audit_checkpoint_insert
INSERT INTO audit_signed_checkpoints
       (chain_key, chain_seq, chain_hash, signed_at, key_id, previous_signature, signature)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (chain_key, chain_seq) DO NOTHING;

-- name: audit_checkpoint_latest
SELECT chain_key, chain_seq, chain_hash, signed_at, key_id, previous_signature, signature
  FROM audit_signed_checkpoints
 WHERE chain_key = $1
 ORDER BY chain_seq DESC
 LIMIT 1;

-- name: audit_checkpoints_after
-- Export: one chain's checkpoints in order, a batch at a time.
SELECT chain_key, chain_seq, chain_hash, signed_at, key_id, previous_signature, signature
  FROM audit_signed_checkpoints
 WHERE chain_key = $1 AND chain_seq > $2
 ORDER BY chain_seq
 LIMIT $3;

-- name: audit_signing_key_current
-- The key that signs (migration 018): the newest recorded one; with none recorded,
-- the key of the newest checkpoint (a database signed before migration 018), read only
-- then; no row at all when nothing was ever signed.
SELECT coalesce(k.key_id, c.key_id) AS key_id, k.key_id IS NOT NULL AS recorded,
       coalesce(k.started_at, c.signed_at) AS since
  FROM (SELECT 1) one
  LEFT JOIN LATERAL (SELECT key_id, started_at FROM audit_signing_keys
                      ORDER BY id DESC LIMIT 1) k ON true
  LEFT JOIN LATERAL (SELECT key_id, signed_at FROM audit_signed_checkpoints
                      WHERE k.key_id IS NULL
                      ORDER BY signed_at DESC LIMIT 1) c ON true
 WHERE coalesce(k.key_id, c.key_id) IS NOT NULL;

-- name: audit_signing_key_used
-- Whether a key ever signed here, or was ever recorded (a retired key stays retired).
SELECT EXISTS (SELECT 1 FROM audit_signing_keys WHERE $1 IN (key_id, previous_key_id))
    OR EXISTS (SELECT 1 FROM audit_signed_checkpoints WHERE key_id = $1);

-- name: audit_signing_key_record
INSERT INTO audit_signing_keys (key_id, previous_key_id, public_key_pem)
VALUES ($1, $2, $3);
