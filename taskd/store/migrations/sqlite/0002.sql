-- Each run's state transitions, with when and why (existing runs get their first and last).
CREATE TABLE run_transitions (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    state TEXT NOT NULL,
    detail TEXT,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
INSERT INTO run_transitions (run_id, seq, at, state, detail)
    SELECT id, 1, queued_at, 'queued', NULL FROM runs;
INSERT INTO run_transitions (run_id, seq, at, state, detail)
    SELECT id, 2, finished_at, state, error FROM runs WHERE finished_at IS NOT NULL;
