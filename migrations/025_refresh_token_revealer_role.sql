-- 025_refresh_token_revealer_role: refresh tokens behind a role of their own (#29).
--
-- With GetAccessToken a client never needs a refresh token: the vault refreshes with
-- it itself. RevealCredential and BatchRevealCredentials of a REFRESH_TOKEN now need
-- the new role 'refresh_token_revealer' (admin keys keep it); 'revealer' no longer
-- covers it (docs/threat-model.md, "Refresh tokens"). Existing keys keep their roles;
-- a key that must still read refresh tokens is created anew with the role.
ALTER TABLE singura.api_keys DROP CONSTRAINT api_keys_roles_known;
ALTER TABLE singura.api_keys ADD CONSTRAINT api_keys_roles_known
    CHECK (roles <@ ARRAY['reader', 'writer', 'revealer', 'refresh_token_revealer']);
