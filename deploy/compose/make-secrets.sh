#!/bin/sh
# Creates deploy/compose/secrets/ for compose.yaml, once: random database passwords, a
# pgpass file for the vault, a root keyring and an auth secret. Every file is mode 0600
# and owned by the user of the container that reads it (PostgreSQL: uid 999; the vault:
# uid 10001), which needs root (or sudo) for the chown. Refuses to overwrite.
set -eu
cd "$(dirname "$0")"
if [ -e secrets ]; then
    echo "deploy/compose/secrets exists; remove it first to make new secrets" >&2
    exit 1
fi
umask 077
mkdir secrets
random() { head -c 24 /dev/urandom | base64 | tr -d '/+=\n'; }
random > secrets/postgres_password
random > secrets/owner_password
random > secrets/service_password
{
    printf 'postgres:5432:singura:singura_owner:%s\n' "$(cat secrets/owner_password)"
    printf 'postgres:5432:singura:singura_service:%s\n' "$(cat secrets/service_password)"
} > secrets/pgpass
head -c 32 /dev/urandom | base64 > secrets/auth_secret
# The keyring, written by the vault's own command (in its image, as its user).
compose="docker compose -f ../../compose.yaml"
$compose build vault
$compose run --rm --no-deps -v "$PWD/secrets:/out" --user 0 vault \
    sh -c 'singura-vault keys generate --keyring-file /out/keyring.json && chown 10001:10001 /out/keyring.json'
chown 999:999 secrets/postgres_password secrets/owner_password secrets/service_password
chown 10001:10001 secrets/pgpass secrets/auth_secret
chmod 600 secrets/*
echo "wrote deploy/compose/secrets/ (keep it out of version control and back it up)"
