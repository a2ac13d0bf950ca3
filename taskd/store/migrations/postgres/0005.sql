-- Upstream runs that ended the way a downstream task waits for (`after:`), shared by every node.
-- A row is pending until one run of the downstream task takes it (run_id): of nodes taking it at
-- once, one does, so each upstream run triggers its downstream task once in the whole cluster.
CREATE TABLE run_upstreams (
    task_id TEXT NOT NULL,
    upstream_run_id TEXT NOT NULL,
    upstream_task_id TEXT NOT NULL,
    upstream_state TEXT NOT NULL,
    finished_at DOUBLE PRECISION NOT NULL,
    context TEXT NOT NULL DEFAULT '{}',
    run_id TEXT,
    PRIMARY KEY (task_id, upstream_run_id)
);
CREATE INDEX run_upstreams_pending ON run_upstreams (task_id, finished_at) WHERE run_id IS NULL;
CREATE INDEX run_upstreams_by_run ON run_upstreams (run_id) WHERE run_id IS NOT NULL;
CREATE INDEX run_upstreams_by_upstream ON run_upstreams (upstream_run_id);
