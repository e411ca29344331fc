-- 008_sealed_under_live_key: a credential row can only name a live data key, whatever
-- runs concurrently.
--
-- A ciphertext is sealed in the vault process under the data key version it read a
-- moment before; the row then records that version. Two races could break the
-- pairing: a retirement destroying the version between the read and the commit
-- (the row would name a destroyed key: unrevealable), and a rewrap batch recording
-- another version than the one that sealed (fixed in the worker, which now records
-- the version of the key it used). This trigger closes the first at the database:
-- every write that names a key version for a sealed value takes a KEY SHARE lock on
-- that data key row (the lock its foreign key takes anyway) and checks the key is still
-- active. RetireKeyVersion and crypto-shredding lock the row FOR UPDATE first (root-key
-- rotation only FOR NO KEY UPDATE, which does not wait for writers); a retirement
-- counts the credentials that need the version after it holds the lock, so either it
-- waits for the writer's commit and then sees (and refuses over) its credential, or
-- the writer waits for the retirement and is refused here, and re-seals under the
-- current key. Revoked rows (no ciphertext) and rows restored by pg_restore (which
-- creates triggers after loading data) are not checked.
CREATE FUNCTION singura.credential_key_must_be_live() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = singura, pg_temp
    AS $$
BEGIN
    IF NEW.ciphertext IS NULL THEN
        RETURN NEW;
    END IF;
    PERFORM 1 FROM singura.data_keys
      WHERE organization_id = NEW.organization_id AND version = NEW.key_version
        AND state = 'active'
      FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'data key version % of the organization is not live', NEW.key_version
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'encrypted_credentials_key_live';
    END IF;
    RETURN NEW;
END
$$;
GRANT EXECUTE ON FUNCTION singura.credential_key_must_be_live() TO singura_app;

CREATE TRIGGER encrypted_credentials_key_live
    BEFORE INSERT OR UPDATE OF key_version, ciphertext ON singura.encrypted_credentials
    FOR EACH ROW EXECUTE FUNCTION singura.credential_key_must_be_live();

-- A change of key_version that leaves the ciphertext as it was is a repair of the
-- record (`singura-vault keys repair`), not a re-encryption: audit it as such.
CREATE OR REPLACE FUNCTION singura.audit_rewrap_action() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = singura, pg_temp
    AS $$
BEGIN
    INSERT INTO singura.audit_logs (organization_id, actor, action, resource_type, resource_id,
                                    request_id, outcome, details)
    VALUES (NEW.organization_id,
            coalesce(nullif(current_setting('singura.actor', true), ''), 'system'),
            CASE WHEN OLD.ciphertext IS NOT DISTINCT FROM NEW.ciphertext
                 THEN 'credential.key_version_repaired'
                 ELSE 'credential.rewrapped' END,
            'credential', NEW.id::text,
            nullif(current_setting('singura.request_id', true), ''), 'success',
            jsonb_build_object('connection_id', NEW.connection_id,
                               'credential_type', NEW.credential_type,
                               'version', NEW.version,
                               'old_key_version', OLD.key_version,
                               'key_version', NEW.key_version));
    RETURN NULL;
END
$$;
