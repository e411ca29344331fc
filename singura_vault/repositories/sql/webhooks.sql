-- Webhook endpoints, deliveries and attempts (migration 026). The service role reaches
-- them in the caller's organization; the delivery worker only through the SECURITY
-- DEFINER functions of the migration (webhook_claim, webhook_record_attempt).

-- name: webhook_endpoint_insert
INSERT INTO webhook_endpoints (organization_id, id, url, description, types, secret_id,
                               secret_ciphertext, secret_nonce, key_version)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING organization_id, id, url, description, types, enabled, disabled_reason,
          failing_since, previous_expires_at, created_at, updated_at;

-- name: webhook_endpoint_get
SELECT organization_id, id, url, description, types, enabled, disabled_reason,
       failing_since, previous_expires_at, created_at, updated_at
  FROM webhook_endpoints
 WHERE organization_id = $1 AND id = $2;

-- name: webhook_endpoint_update
-- $3 url, $4 types, $5 enabled: NULL leaves the column as it is. Enabling clears the
-- reason and the failure streak; disabling by hand records 'manual'.
UPDATE webhook_endpoints
   SET url = coalesce($3, url),
       types = coalesce($4, types),
       enabled = coalesce($5, enabled),
       disabled_reason = CASE WHEN $5 IS NULL OR $5 = enabled THEN disabled_reason
                              WHEN $5 THEN '' ELSE 'manual' END,
       failing_since = CASE WHEN $5 AND NOT enabled THEN NULL ELSE failing_since END
 WHERE organization_id = $1 AND id = $2
RETURNING organization_id, id, url, description, types, enabled, disabled_reason,
          failing_since, previous_expires_at, created_at, updated_at;

-- name: webhook_endpoint_delete
DELETE FROM webhook_endpoints WHERE organization_id = $1 AND id = $2;

-- name: webhook_endpoint_rotate
-- The current secret becomes the previous one until now() + $7 (none when $7 is 0).
UPDATE webhook_endpoints
   SET previous_secret_id = CASE WHEN $7 > interval '0' THEN secret_id END,
       previous_secret_ciphertext = CASE WHEN $7 > interval '0' THEN secret_ciphertext END,
       previous_secret_nonce = CASE WHEN $7 > interval '0' THEN secret_nonce END,
       previous_key_version = CASE WHEN $7 > interval '0' THEN key_version END,
       previous_expires_at = CASE WHEN $7 > interval '0' THEN now() + $7 END,
       secret_id = $3, secret_ciphertext = $4, secret_nonce = $5, key_version = $6
 WHERE organization_id = $1 AND id = $2
RETURNING organization_id, id, url, description, types, enabled, disabled_reason,
          failing_since, previous_expires_at, created_at, updated_at;

-- name: webhook_endpoints_list
-- ListWebhookEndpoints: $5 organization, after ($6, $7), at most $8 (one round trip).
SELECT * FROM singura.webhook_endpoints_list_scoped($1, $2, $3, $4, $5, $6, $7, $8);

-- name: webhook_deliveries_list
-- ListWebhookDeliveries: $5 organization, $6 endpoint, $7 state (NULL: any), before
-- ($8, $9), at most $10, newest first, attempts included (one round trip).
SELECT * FROM singura.webhook_deliveries_list_scoped($1, $2, $3, $4, $5, $6, $7, $8, $9, $10);

-- name: webhook_event_exists
SELECT type FROM events WHERE organization_id = $1 AND cursor = $2;

-- name: webhook_redeliver
-- The event's delivery to the endpoint, pending and due now (a new series of retries);
-- created if the event was never sent there (its type did not match, or the endpoint
-- came later).
INSERT INTO webhook_deliveries (organization_id, endpoint_id, event_cursor, event_type)
VALUES ($1, $2, $3, $4)
ON CONFLICT (organization_id, endpoint_id, event_cursor) DO UPDATE
   SET state = 'pending', next_attempt_at = now(), scheduled_at = now(), finished_at = NULL
RETURNING id, endpoint_id, event_cursor, event_type, state, attempts, next_attempt_at,
          created_at, finished_at, last_response_code, '[]'::jsonb AS attempt_list;

-- name: webhook_send_test
INSERT INTO webhook_deliveries (organization_id, endpoint_id, event_cursor, event_type)
VALUES ($1, $2, NULL, 'webhook.test')
RETURNING id, endpoint_id, event_cursor, event_type, state, attempts, next_attempt_at,
          created_at, finished_at, last_response_code, '[]'::jsonb AS attempt_list;

-- name: webhook_claim
-- The delivery worker: due deliveries of any organization, leased (migration 026).
SELECT * FROM singura.webhook_claim($1, $2, $3);

-- name: webhook_record_attempt
SELECT singura.webhook_record_attempt($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
       AS disabled;

-- name: webhook_oldest_pending
SELECT singura.webhook_oldest_pending() AS oldest;
