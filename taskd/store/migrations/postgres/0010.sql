-- The runs that ended badly, longest first: the search an operator makes after an incident
-- (failed runs by duration, often with a text) reads it in order and stops at the page, where
-- the index over every run's duration would check twenty runs for each one it keeps.
CREATE INDEX runs_ended_badly_by_duration ON runs ((finished_at - started_at) NULLS FIRST, queued_at, id)
    WHERE state IN ('failed', 'stopped', 'interrupted');
