-- Each task's alert state (ok or failing, when it was last told, whether it is overdue). A change
-- is written over the version it was decided from, so that it is decided once.
CREATE TABLE alert_state (
    task_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    since REAL NOT NULL,
    first_seen REAL NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    unreported INTEGER NOT NULL DEFAULT 0,
    notified_at REAL,
    overdue_at REAL,
    version INTEGER NOT NULL
) WITHOUT ROWID;
