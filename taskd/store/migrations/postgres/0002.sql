-- Several nodes on one database: who runs (with a lease renewed by heartbeats, in the server's
-- time so that the nodes' clocks do not matter), which node ran each run, and which node won
-- each scheduled fire (one row per fire: the primary key makes it run once in the cluster).
ALTER TABLE runs ADD COLUMN node TEXT;
CREATE INDEX runs_active_by_node ON runs (node) WHERE state IN ('queued', 'running', 'retrying');
CREATE TABLE nodes (
    name TEXT PRIMARY KEY,
    incarnation TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    version TEXT NOT NULL,
    config_digest TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL,
    slots INTEGER NOT NULL,
    slots_in_use INTEGER NOT NULL,
    dead_at DOUBLE PRECISION
);
CREATE TABLE fire_claims (
    task_id TEXT NOT NULL,
    instant DOUBLE PRECISION NOT NULL,
    node TEXT NOT NULL,
    claimed_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (task_id, instant)
);
