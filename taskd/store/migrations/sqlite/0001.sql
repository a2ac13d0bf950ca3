-- Runs, their attempts, steps and log lines; skipped fires; tombstones; the last fire of each task.
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    trigger TEXT NOT NULL,
    state TEXT NOT NULL,
    scheduled_at REAL,
    queued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    params TEXT NOT NULL DEFAULT '{}',
    priority INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_task ON runs (task_id, queued_at);
CREATE INDEX runs_by_queued ON runs (queued_at);
CREATE INDEX runs_active ON runs (state) WHERE state IN ('queued', 'running', 'retrying');
CREATE TABLE attempts (
    run_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    error TEXT,
    PRIMARY KEY (run_id, number)
) WITHOUT ROWID;
CREATE TABLE steps (
    run_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    error TEXT,
    PRIMARY KEY (run_id, attempt, idx)
) WITHOUT ROWID;
CREATE TABLE run_logs (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    stream TEXT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE fires (
    id INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    instant REAL NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE INDEX fires_by_task ON fires (task_id, instant);
CREATE TABLE tombstones (
    task_id TEXT PRIMARY KEY,
    definition_hash TEXT NOT NULL,
    deleted_at REAL NOT NULL
);
CREATE TABLE task_state (
    task_id TEXT PRIMARY KEY,
    last_fire REAL NOT NULL
);
