-- The audit trail: what was done through the API, or refused, by whom (the token's name), from
-- where and with what answer. Pruned by age with the runs.
CREATE TABLE audit (
    id BIGSERIAL PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    action TEXT NOT NULL,
    actor TEXT,
    role TEXT,
    remote TEXT,
    target TEXT,
    status INTEGER NOT NULL,
    detail TEXT
);
CREATE INDEX audit_by_time ON audit (at);
-- Runs by the time they finished, for the runs finished per minute.
CREATE INDEX runs_by_end ON runs (finished_at);
-- A node shutting down says so at its heartbeats until it leaves.
ALTER TABLE nodes ADD COLUMN draining BOOLEAN NOT NULL DEFAULT FALSE;
