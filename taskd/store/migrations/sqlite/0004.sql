-- The runs that ended badly by when they ended (a failure is looked for by when it happened);
-- partial like the index of 0003, so a completed run never writes to it.
CREATE INDEX runs_ended_badly_by_end ON runs (finished_at)
    WHERE state IN ('failed', 'stopped', 'interrupted');
