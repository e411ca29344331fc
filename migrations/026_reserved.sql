-- 026_reserved: a placeholder, in the s8-events branch only, for the migration another
-- lane of this turn adds as 026 (the loader refuses gaps). Integration drops this file
-- and keeps that lane's 026; 028_event_types does not depend on it.
SELECT 1;
