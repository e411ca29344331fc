-- Provider signals (migration 027): the clients a signal may come from, the claim of
-- its ids, and the connections it moves. docs/events.md, "Provider signals".

-- name: oauth_signal_clients
-- Platform $5's OAuth clients a signal may verify against (Slack: those with a signing
-- secret), every organization in admin scope, the key's own otherwise; at most $6.
SELECT organization_id, id, client_id, key_version, signing_secret_ciphertext,
       signing_secret_nonce
  FROM singura.oauth_signal_clients_scoped($1, $2, $3, $4, $5, $6);

-- name: provider_signal_claim
-- True if none of the ids $1 (each kept until its expiry in $2) was taken before.
SELECT singura.provider_signal_claim($1, $2);

-- name: provider_signal_enter_organization
-- The next organization of a signal's transaction (its scope, fenced by the caller).
SELECT singura.enter_scope($1, $2, $3, $4);

-- name: connections_revoked_at_provider
-- The current organization's connections of platform $1 in workspace $2 (NULL: any)
-- with a user in $3 (NULL: any), moved to $4; $5 is the event data of the signal.
SELECT connection_id, from_status
  FROM singura.connections_revoked_at_provider($1, $2, $3, $4, $5);
