-- 003_api_keys: callers authenticate with API keys; per-key rate limits shared by all vault processes.
--
-- A key is shown once as svk_<key_id>_<secret>; only an HMAC-SHA256 digest of it
-- is stored. An admin key has no organization and no roles; an organization key
-- has one organization and at least one role.

CREATE TABLE singura.api_keys (
    id                uuid PRIMARY KEY,
    key_id            text NOT NULL
        CONSTRAINT api_keys_key_id_format CHECK (key_id ~ '^[a-z0-9]{16}$'),
    secret_digest     bytea NOT NULL
        CONSTRAINT api_keys_digest_length CHECK (octet_length(secret_digest) = 32),
    organization_id   uuid REFERENCES singura.organizations (id) ON DELETE CASCADE,
    roles             text[] NOT NULL DEFAULT '{}'
        CONSTRAINT api_keys_roles_known CHECK (roles <@ ARRAY['reader', 'writer', 'revealer']),
    name              text NOT NULL DEFAULT ''
        CONSTRAINT api_keys_name_length CHECK (char_length(name) <= 200),
    -- The key id of the key that created this one, or 'bootstrap'.
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz,
    revoked_at        timestamptz,
    -- Token bucket for SINGURA_RATE_LIMIT_RPS: NULL means full. Kept on the row so
    -- that the limit holds across every vault process serving this database.
    bucket_tokens     double precision,
    bucket_updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_keys_key_id_key UNIQUE (key_id),
    CONSTRAINT api_keys_scope_roles CHECK (
        (organization_id IS NULL AND cardinality(roles) = 0)
        OR (organization_id IS NOT NULL AND cardinality(roles) > 0))
);
-- ListApiKeys: newest first, optionally one organization's.
CREATE INDEX api_keys_list_idx ON singura.api_keys (organization_id, created_at DESC, id DESC);
-- Bootstrap: "is there any live admin key?"
CREATE INDEX api_keys_admin_idx ON singura.api_keys (created_at) WHERE organization_id IS NULL;

-- ENABLEd but deliberately not FORCEd: the service role is bound by the policy
-- (admin scope manages keys, an organization sees its own), while
-- singura.authenticate() below, owned by the schema owner, must find a key before
-- anyone knows which tenant it belongs to. That function is the narrow door:
-- given a key id and a digest, it returns the one matching key's scope, nothing
-- else, and it is the only way the service role reads another tenant's key row.
ALTER TABLE singura.api_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_keys_access ON singura.api_keys
    USING (singura.is_admin_scope() OR organization_id = singura.current_organization_id())
    WITH CHECK (singura.is_admin_scope());
GRANT SELECT, INSERT, UPDATE ON singura.api_keys TO singura_app;

-- Authenticate one call and charge its rate-limit bucket, in one round trip.
-- status: 'ok', 'unknown' (no such key or wrong secret), 'revoked', 'expired',
-- 'rate_limited' (retry_after_ms says when a token is back).
CREATE FUNCTION singura.authenticate(
    p_key_id text, p_digest bytea, p_rate double precision, p_burst double precision)
RETURNS TABLE (id uuid, organization_id uuid, roles text[], status text, retry_after_ms integer)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = singura, pg_temp
AS $$
DECLARE
    k singura.api_keys%ROWTYPE;
    now_ts timestamptz := clock_timestamp();
    tokens double precision;
BEGIN
    IF p_rate > 0 THEN
        -- Row lock: concurrent calls of one key queue here, so the bucket is exact.
        SELECT * INTO k FROM singura.api_keys a WHERE a.key_id = p_key_id FOR NO KEY UPDATE;
    ELSE
        SELECT * INTO k FROM singura.api_keys a WHERE a.key_id = p_key_id;
    END IF;
    IF NOT FOUND OR k.secret_digest <> p_digest THEN
        RETURN QUERY SELECT NULL::uuid, NULL::uuid, NULL::text[], 'unknown'::text, 0;
        RETURN;
    END IF;
    IF k.revoked_at IS NOT NULL THEN
        RETURN QUERY SELECT k.id, k.organization_id, k.roles, 'revoked'::text, 0;
        RETURN;
    END IF;
    IF k.expires_at IS NOT NULL AND k.expires_at <= now_ts THEN
        RETURN QUERY SELECT k.id, k.organization_id, k.roles, 'expired'::text, 0;
        RETURN;
    END IF;
    IF p_rate > 0 THEN
        tokens := least(p_burst, coalesce(k.bucket_tokens, p_burst)
                  + extract(epoch FROM now_ts - k.bucket_updated_at) * p_rate);
        IF tokens < 1 THEN
            UPDATE singura.api_keys a SET bucket_tokens = tokens, bucket_updated_at = now_ts
             WHERE a.id = k.id;
            RETURN QUERY SELECT k.id, k.organization_id, k.roles, 'rate_limited'::text,
                                ceil((1 - tokens) / p_rate * 1000)::integer;
            RETURN;
        END IF;
        UPDATE singura.api_keys a SET bucket_tokens = tokens - 1, bucket_updated_at = now_ts
         WHERE a.id = k.id;
    END IF;
    RETURN QUERY SELECT k.id, k.organization_id, k.roles, 'ok'::text, 0;
END
$$;
REVOKE ALL ON FUNCTION singura.authenticate(text, bytea, double precision, double precision)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION singura.authenticate(text, bytea, double precision, double precision)
    TO singura_app;

-- Denied calls are audited even when the caller's organization is unknown; the
-- audit policy already admits organization-less events in admin scope.
