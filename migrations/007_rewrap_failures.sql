-- 007_rewrap_failures: a credential that cannot be re-encrypted (its ciphertext fails
-- the integrity check, or its data key was destroyed) no longer stalls a rewrap job:
-- it is recorded here, skipped for the rest of the job, and counted as failed.
CREATE TABLE singura.rewrap_failures (
    job_id          uuid NOT NULL REFERENCES singura.rewrap_jobs (id) ON DELETE CASCADE,
    organization_id uuid NOT NULL,
    credential_id   uuid NOT NULL,
    reason          text NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, organization_id, credential_id)
);
-- Ids and a reason code only, like rewrap_jobs: no row-level security.
GRANT SELECT, INSERT ON singura.rewrap_failures TO singura_app;

ALTER TABLE singura.rewrap_jobs ADD COLUMN failed bigint NOT NULL DEFAULT 0;
