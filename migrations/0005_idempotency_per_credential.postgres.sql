-- Idempotency keys are scoped per credential: unique per (requested_by, idempotency_key), so
-- the same key from two credentials makes two actions. PostgreSQL (this file; SQLite has its
-- own): 0003's column constraint has PostgreSQL's default name.
ALTER TABLE actions DROP CONSTRAINT actions_idempotency_key_key;
CREATE UNIQUE INDEX actions_idempotency ON actions (requested_by, idempotency_key);
