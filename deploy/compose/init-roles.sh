#!/bin/sh
# Runs once, on PostgreSQL's first start (docker-entrypoint-initdb.d), as its superuser:
# the vault's roles and database, as docs/operations.md#sql-for-the-dba creates them.
# Passwords come from secret files; psql's :'var' quoting keeps them literals.
set -eu
owner_password=$(cat "$SINGURA_OWNER_PASSWORD_FILE")
service_password=$(cat "$SINGURA_SERVICE_PASSWORD_FILE")
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v owner_password="$owner_password" -v service_password="$service_password" <<'SQL'
CREATE ROLE singura_owner LOGIN PASSWORD :'owner_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
CREATE ROLE singura_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
CREATE ROLE singura_service LOGIN PASSWORD :'service_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS INHERIT;
GRANT singura_app TO singura_service;
CREATE DATABASE singura OWNER singura_owner;
REVOKE ALL ON DATABASE singura FROM PUBLIC;
GRANT CONNECT ON DATABASE singura TO singura_app;
SQL
