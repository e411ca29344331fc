-- What backup and restore check about a database before pg_dump or pg_restore runs,
-- on a connection as the role the operator gave (see repositories/backup_checks.py).

-- name: backup_source_facts
-- Can this role read every tenant's rows (superuser or BYPASSRLS), and is there a vault?
SELECT current_user AS role, current_database() AS database,
       r.rolsuper OR r.rolbypassrls AS bypasses_rls,
       EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS has_schema
  FROM pg_roles r
 WHERE r.rolname = current_user;

-- name: restore_target_facts
-- Is this an empty database the schema owner (not a superuser) may build the vault in,
-- in a cluster that has the service group role the backup's grants name?
SELECT current_user AS role, current_database() AS database, r.rolsuper AS superuser,
       EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS has_schema,
       EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2) AS has_app_role,
       has_database_privilege(current_database(), 'CREATE') AS may_create
  FROM pg_roles r
 WHERE r.rolname = current_user;
