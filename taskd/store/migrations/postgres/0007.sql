-- Units of pools held by runs, for pools exact across every node: a run may hold units only while
-- the units held by the runs of live nodes leave room. A dead node's holds count no more.
CREATE TABLE pool_holds (
    pool TEXT NOT NULL,
    run_id TEXT NOT NULL,
    node TEXT NOT NULL,
    units INTEGER NOT NULL,
    held_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (pool, run_id)
);
CREATE INDEX pool_holds_by_run ON pool_holds (run_id);
CREATE INDEX pool_holds_by_node ON pool_holds (node);
-- What each node offers runs' requests (memory bytes, cpu millicores), told at every heartbeat: a
-- task whose request fits no live node is refused with that reason, once for the cluster.
ALTER TABLE nodes ADD COLUMN capacity TEXT NOT NULL DEFAULT '{}';
