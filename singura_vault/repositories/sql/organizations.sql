-- Organization queries. The tenant (or admin scope) is set by db.Database before
-- any of these run; row-level security confines every one of them.

-- name: organization_insert
INSERT INTO organizations (id, name, slug, domain, plan, settings, create_request_id)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING organizations.*,
          (SELECT connection_limit FROM plans WHERE plans.plan = organizations.plan)
              AS connection_limit;

-- name: organization_get_for_update
SELECT o.*, p.connection_limit
  FROM organizations o
  JOIN plans p ON p.plan = o.plan
 WHERE o.id = $1
   FOR NO KEY UPDATE OF o;

-- name: organization_by_request_id
SELECT o.*, p.connection_limit
  FROM organizations o
  JOIN plans p ON p.plan = o.plan
 WHERE o.create_request_id = $1;

-- name: organization_update
UPDATE organizations
   SET name = coalesce($2, name),
       slug = coalesce($3, slug),
       domain = coalesce($4, domain),
       plan = coalesce($5, plan),
       settings = coalesce($6, settings)
 WHERE id = $1
RETURNING organizations.*,
          (SELECT connection_limit FROM plans WHERE plans.plan = organizations.plan)
              AS connection_limit;

-- name: organization_delete
DELETE FROM organizations WHERE id = $1;

-- One round trip each (migration 013; scope in $1-$4, see Database.fetch_scoped).

-- name: organization_get_scoped
SELECT * FROM singura.organization_get_scoped($1, $2, $3, $4, $5);

-- name: organization_list_scoped
SELECT * FROM singura.organization_list_scoped($1, $2, $3, $4, $5, $6, $7);
