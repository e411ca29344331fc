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
-- that checkpoint's signature, which the next one signs too.
SELECT h.chain_key, h.last_seq, h.last_hash, c.signature AS previous_signature
  FROM audit_chain_heads h
  LEFT JOIN LATERAL (SELECT s.chain_seq, s.signature FROM audit_signed_checkpoints s
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
