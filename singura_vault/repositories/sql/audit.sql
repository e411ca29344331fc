-- Audit events written by the service in the same transaction as the change.

-- name: audit_append
INSERT INTO audit_logs (
    organization_id, actor, action, resource_type, resource_id, request_id, outcome, details)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8);
