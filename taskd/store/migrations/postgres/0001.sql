-- Runs, their attempts, steps, log lines and state transitions; skipped fires; tombstones; the
-- last fire of each task; partial indexes by state for run search.
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    trigger TEXT NOT NULL,
    state TEXT NOT NULL,
    scheduled_at DOUBLE PRECISION,
    queued_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    params TEXT NOT NULL DEFAULT '{}',
    priority INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_task ON runs (task_id, queued_at);
CREATE INDEX runs_by_queued ON runs (queued_at);
CREATE INDEX runs_active ON runs (state) WHERE state IN ('queued', 'running', 'retrying');
CREATE INDEX runs_ended_badly ON runs (state, queued_at) WHERE state IN ('failed', 'stopped', 'interrupted');
CREATE INDEX runs_ended_badly_by_end ON runs (finished_at) WHERE state IN ('failed', 'stopped', 'interrupted');
CREATE TABLE attempts (
    run_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    state TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    error TEXT,
    PRIMARY KEY (run_id, number)
);
CREATE TABLE steps (
    run_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    error TEXT,
    PRIMARY KEY (run_id, attempt, idx)
);
CREATE TABLE run_logs (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    stream TEXT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE run_transitions (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL,
    detail TEXT,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE fires (
    id BIGSERIAL PRIMARY KEY,
    task_id TEXT NOT NULL,
    instant DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    recorded_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX fires_by_task ON fires (task_id, instant);
CREATE TABLE tombstones (
    task_id TEXT PRIMARY KEY,
    definition_hash TEXT NOT NULL,
    deleted_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE task_state (
    task_id TEXT PRIMARY KEY,
    last_fire DOUBLE PRECISION NOT NULL
);
