-- Each task's alert state (ok or failing, when it was last told, whether it is overdue), shared
-- by every node. A change is written over the version it was decided from, so that one node
-- decides it and one alert goes out for the whole cluster.
CREATE TABLE alert_state (
    task_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    since DOUBLE PRECISION NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    unreported INTEGER NOT NULL DEFAULT 0,
    notified_at DOUBLE PRECISION,
    overdue_at DOUBLE PRECISION,
    version INTEGER NOT NULL
);
