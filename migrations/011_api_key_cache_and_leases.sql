-- 011_api_key_cache_and_leases: authentication without a database write per call.
--
-- Before, singura.authenticate() locked the key's row and charged its rate-limit bucket
-- on every call: one write and one WAL flush per call, and all calls of one key queued
-- on that row. Now each vault process keeps verified keys in memory and spends
-- rate-limit tokens it has leased from the shared bucket in small batches:
--
-- * singura.api_key_lookup() verifies a key and returns its scope, reading only;
-- * singura.api_key_lease() takes up to p_want tokens from the key's bucket in one
--   short statement (the row lock is held for that statement alone);
-- * a trigger announces every change of a key (revocation, expiry, roles, deletion)
--   on the channel singura_api_keys, so every process drops it from its cache at once.
-- singura.authenticate() stays, for vault processes of the previous release during an
-- upgrade.

CREATE FUNCTION singura.api_key_lookup(p_key_id text, p_digest bytea)
RETURNS TABLE (id uuid, organization_id uuid, roles text[], status text,
               expires_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = singura, pg_temp
AS $$
DECLARE
    k singura.api_keys%ROWTYPE;
BEGIN
    SELECT * INTO k FROM singura.api_keys a WHERE a.key_id = p_key_id;
    IF NOT FOUND OR k.secret_digest <> p_digest THEN
        RETURN QUERY SELECT NULL::uuid, NULL::uuid, NULL::text[], 'unknown'::text,
                            NULL::timestamptz;
        RETURN;
    END IF;
    IF k.revoked_at IS NOT NULL THEN
        RETURN QUERY SELECT k.id, k.organization_id, k.roles, 'revoked'::text, k.expires_at;
        RETURN;
    END IF;
    IF k.expires_at IS NOT NULL AND k.expires_at <= clock_timestamp() THEN
        RETURN QUERY SELECT k.id, k.organization_id, k.roles, 'expired'::text, k.expires_at;
        RETURN;
    END IF;
    RETURN QUERY SELECT k.id, k.organization_id, k.roles, 'ok'::text, k.expires_at;
END
$$;
REVOKE ALL ON FUNCTION singura.api_key_lookup(text, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION singura.api_key_lookup(text, bytea) TO singura_app;

-- Take up to p_want tokens (at least one, or none) from the bucket; granted = 0 comes
-- with the milliseconds until a token is back. The caller has verified the key first.
CREATE FUNCTION singura.api_key_lease(
    p_key_id text, p_rate double precision, p_burst double precision, p_want integer)
RETURNS TABLE (granted integer, retry_after_ms integer)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = singura, pg_temp
AS $$
DECLARE
    k singura.api_keys%ROWTYPE;
    now_ts timestamptz := clock_timestamp();
    tokens double precision;
    take integer;
BEGIN
    SELECT * INTO k FROM singura.api_keys a WHERE a.key_id = p_key_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 0, 0;
        RETURN;
    END IF;
    tokens := least(p_burst, coalesce(k.bucket_tokens, p_burst)
              + greatest(extract(epoch FROM now_ts - k.bucket_updated_at), 0) * p_rate);
    take := least(greatest(p_want, 1), floor(tokens)::integer);
    IF take < 1 THEN
        UPDATE singura.api_keys a SET bucket_tokens = tokens, bucket_updated_at = now_ts
         WHERE a.id = k.id;
        RETURN QUERY SELECT 0, ceil((1 - tokens) / p_rate * 1000)::integer;
        RETURN;
    END IF;
    UPDATE singura.api_keys a SET bucket_tokens = tokens - take, bucket_updated_at = now_ts
     WHERE a.id = k.id;
    RETURN QUERY SELECT take, 0;
END
$$;
REVOKE ALL ON FUNCTION singura.api_key_lease(text, double precision, double precision, integer)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION singura.api_key_lease(text, double precision, double precision, integer)
    TO singura_app;

-- Cache invalidation: the key id (public, not secret) of every changed key, delivered
-- to every listening vault process when the change commits.
CREATE FUNCTION singura.api_key_changed() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = singura, pg_temp
    AS $$
BEGIN
    PERFORM pg_notify('singura_api_keys',
                      CASE WHEN TG_OP = 'DELETE' THEN OLD.key_id ELSE NEW.key_id END);
    RETURN NULL;
END
$$;
GRANT EXECUTE ON FUNCTION singura.api_key_changed() TO singura_app;
CREATE TRIGGER api_keys_changed
    AFTER UPDATE OF revoked_at, expires_at, roles, organization_id, secret_digest OR DELETE
    ON singura.api_keys
    FOR EACH ROW EXECUTE FUNCTION singura.api_key_changed();
