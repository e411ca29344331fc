-- 013_one_round_trip_reads: a read is one statement, so one round trip.
--
-- A request used to run BEGIN, a set_config of its tenant, actor and request id, its
-- query and COMMIT: four round trips, each costing more than the query itself. The
-- functions below take the scope as their first four arguments, enter it with
-- transaction-scoped settings and run the query, in one statement that the vault sends
-- outside any explicit transaction. The statement is its own transaction, so the
-- settings end with it exactly as they did at COMMIT: a pooled connection still never
-- carries one request's tenant into the next.
--
-- They are SECURITY INVOKER (the default): the query runs as the service role, under
-- the same forced row-level security as before. The scope is only ever the tenant the
-- caller could have set itself with set_config.

-- Enter a request's scope: its tenant ('singura.organization_id') or admin scope
-- ('singura.scope' = 'admin'), and who acts under which request id (for the audit
-- triggers). Transaction-scoped, like the vault's own set_config round trip.
CREATE FUNCTION singura.enter_scope(p_setting text, p_value text, p_actor text,
                                    p_request_id text) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF p_setting NOT IN ('singura.organization_id', 'singura.scope') THEN
        RAISE EXCEPTION 'not a request scope: %', p_setting USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config(p_setting, p_value, true),
            set_config('singura.actor', p_actor, true),
            set_config('singura.request_id', p_request_id, true);
END
$$;
GRANT EXECUTE ON FUNCTION singura.enter_scope(text, text, text, text) TO singura_app;

-- A credential's metadata: every column but the ciphertext and its nonce. The view runs
-- with the caller's rights, so encrypted_credentials' policy applies as it does to a
-- direct query.
CREATE VIEW singura.credential_metadata WITH (security_invoker = true) AS
SELECT id, organization_id, connection_id, credential_type, version, state, key_version,
       fingerprint, created_at, expires_at, state_changed_at
  FROM singura.encrypted_credentials;
GRANT SELECT ON singura.credential_metadata TO singura_app;

-- An organization with its plan's connection limit.
CREATE VIEW singura.organization_with_plan WITH (security_invoker = true) AS
SELECT o.*, p.connection_limit
  FROM singura.organizations o
  JOIN singura.plans p ON p.plan = o.plan;
GRANT SELECT ON singura.organization_with_plan TO singura_app;

-- Each function below is a named query of the repositories (same name, without
-- _scoped), moved here so that it runs after its scope is entered.

CREATE FUNCTION singura.credential_get_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text, p_org uuid, p_id uuid)
RETURNS SETOF singura.credential_metadata
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT * FROM singura.credential_metadata WHERE organization_id = p_org AND id = p_id;
$$;

-- Served by encrypted_credentials_list_idx; EXPIRED is derived from expires_at.
CREATE FUNCTION singura.credential_list_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text, p_org uuid,
    p_connection uuid, p_type text, p_state text, p_after_at timestamptz, p_after_id uuid,
    p_limit integer)
RETURNS SETOF singura.credential_metadata
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT *
  FROM singura.credential_metadata
 WHERE organization_id = p_org AND connection_id = p_connection
   AND (p_type IS NULL OR credential_type = p_type)
   AND (p_state IS NULL OR
        (CASE WHEN state = 'active' AND expires_at <= now() THEN 'expired' ELSE state END) = p_state)
   AND (p_after_at IS NULL OR (created_at, id) < (p_after_at, p_after_id))
 ORDER BY created_at DESC, id DESC
 LIMIT p_limit;
$$;

-- Newest version first; the cursor is the last row's id (its version bounds the next page).
CREATE FUNCTION singura.credential_versions_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text, p_org uuid,
    p_connection uuid, p_type text, p_after uuid, p_limit integer)
RETURNS SETOF singura.credential_metadata
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT *
  FROM singura.credential_metadata
 WHERE organization_id = p_org AND connection_id = p_connection AND credential_type = p_type
   AND (p_after IS NULL OR version < (SELECT c.version FROM singura.encrypted_credentials c
                                       WHERE c.organization_id = p_org AND c.id = p_after))
 ORDER BY version DESC
 LIMIT p_limit;
$$;

-- Served by the partial index encrypted_credentials_expiry_idx.
CREATE FUNCTION singura.credential_expiring_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text, p_org uuid,
    p_before timestamptz, p_after_at timestamptz, p_after_id uuid, p_limit integer)
RETURNS SETOF singura.credential_metadata
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT *
  FROM singura.credential_metadata
 WHERE organization_id = p_org AND state = 'active'
   AND expires_at IS NOT NULL AND expires_at < p_before
   AND (p_after_at IS NULL OR (expires_at, id) > (p_after_at, p_after_id))
 ORDER BY expires_at, id
 LIMIT p_limit;
$$;

-- RevealCredential and BatchRevealCredentials: for each (connection, type, version)
-- target, numbered from 1 in `ord`, the named version or (0) the newest, with its
-- ciphertext and wrapped data key. The reveal's audit event is a second statement
-- (audit_append_scoped) because it records whether the vault could open it.
CREATE FUNCTION singura.credential_for_reveal_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text, p_org uuid,
    p_connections uuid[], p_types text[], p_versions integer[])
RETURNS TABLE (ord bigint, id uuid, organization_id uuid, connection_id uuid,
               credential_type text, version integer, state text, key_version integer,
               fingerprint text, created_at timestamptz, expires_at timestamptz,
               state_changed_at timestamptz, ciphertext bytea, nonce bytea,
               root_key_id text, wrapped_key bytea)
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT t.ord, e.id, e.organization_id, e.connection_id, e.credential_type, e.version,
       e.state, e.key_version, e.fingerprint, e.created_at, e.expires_at,
       e.state_changed_at, e.ciphertext, e.nonce, d.root_key_id, d.wrapped_key
  FROM unnest(p_connections, p_types, p_versions) WITH ORDINALITY
       AS t(connection_id, credential_type, version, ord)
  CROSS JOIN LATERAL (
        SELECT * FROM singura.encrypted_credentials c
         WHERE c.organization_id = p_org AND c.connection_id = t.connection_id
           AND c.credential_type = t.credential_type
           AND (t.version = 0 OR c.version = t.version)
         ORDER BY c.version DESC
         LIMIT 1) e
  JOIN singura.data_keys d ON d.organization_id = e.organization_id AND d.version = e.key_version;
$$;

-- Audit events the service writes itself (reveals), one per array element, in one
-- statement: committed when it returns (the audit half of audit-or-fail).
CREATE FUNCTION singura.audit_append_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text, p_org uuid,
    p_actions text[], p_resource_types text[], p_resource_ids text[], p_outcomes text[],
    p_details jsonb[])
RETURNS void
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
INSERT INTO singura.audit_logs (organization_id, actor, action, resource_type, resource_id,
                                request_id, outcome, details)
SELECT p_org, p_actor, e.action, e.resource_type, e.resource_id, nullif(p_request_id, ''),
       e.outcome, e.details
  FROM unnest(p_actions, p_resource_types, p_resource_ids, p_outcomes, p_details)
       AS e(action, resource_type, resource_id, outcome, details);
$$;

CREATE FUNCTION singura.connection_get_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text, p_org uuid, p_id uuid)
RETURNS SETOF singura.platform_connections
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT * FROM singura.platform_connections WHERE organization_id = p_org AND id = p_id;
$$;

-- Keyset pagination, newest first; the status filter uses
-- platform_connections_status_list_idx, no filter platform_connections_list_idx.
CREATE FUNCTION singura.connection_list_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text, p_org uuid,
    p_platform text, p_status text, p_after_at timestamptz, p_after_id uuid, p_limit integer)
RETURNS SETOF singura.platform_connections
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT *
  FROM singura.platform_connections
 WHERE organization_id = p_org
   AND (p_platform IS NULL OR platform = p_platform)
   AND (p_status IS NULL OR status = p_status)
   AND (p_after_at IS NULL OR (created_at, id) < (p_after_at, p_after_id))
 ORDER BY created_at DESC, id DESC
 LIMIT p_limit;
$$;

CREATE FUNCTION singura.organization_get_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text, p_id uuid)
RETURNS SETOF singura.organization_with_plan
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT * FROM singura.organization_with_plan WHERE id = p_id;
$$;

-- Keyset pagination on (created_at, id): page N costs what page 1 does.
CREATE FUNCTION singura.organization_list_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text,
    p_after_at timestamptz, p_after_id uuid, p_limit integer)
RETURNS SETOF singura.organization_with_plan
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT *
  FROM singura.organization_with_plan
 WHERE (p_after_at IS NULL OR (created_at, id) > (p_after_at, p_after_id))
 ORDER BY created_at, id
 LIMIT p_limit;
$$;
