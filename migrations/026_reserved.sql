-- 026_reserved: a placeholder for another helper's migration of this turn (#29/#24);
-- replaced by that migration at integration. Intentionally empty.
SELECT 1;
