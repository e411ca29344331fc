-- 015_generic_plans_on_the_hot_path: plan the reveal read and the store's plan once per
-- connection, not once per call.
--
-- PostgreSQL re-plans a parameterized statement for each call while its generic plan
-- looks costlier than the custom ones; with array parameters (unnest over the targets
-- of a reveal) the generic estimate always does, so every reveal paid ~0.3 ms of
-- planning for ~0.1 ms of execution (EXPLAIN: Planning Time 0.33 ms, Execution Time
-- 0.14 ms). Measured on the reference machine, backend CPU per call, one in flight:
-- the reveal read 360-410 us -> 90-110 us, the store's plan 143 -> 93 us. The generic
-- plans are the ones the custom plans already were (index scans on
-- encrypted_credentials_version_key, data_keys_pkey and the request-id key), so
-- nothing else changes. List queries keep custom plans: their optional filters pick
-- different indexes.
ALTER FUNCTION singura.credential_for_reveal_scoped(text, text, text, text, uuid, uuid[],
                                                    text[], integer[])
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION singura.credential_store_plan_scoped(text, text, text, text, uuid, uuid, text,
                                                    uuid)
    SET plan_cache_mode = force_generic_plan;
