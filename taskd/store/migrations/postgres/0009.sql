-- Run search in the order asked for: one index per sort key, ending with the tie-breakers
-- (queued_at, id) and with NULLs first, so that an ascending search (NULLS FIRST) reads it forward
-- and a descending one (NULLS LAST) backward, and stops at the page.
CREATE INDEX runs_by_queued_id ON runs (queued_at NULLS FIRST, id);
CREATE INDEX runs_by_task_queued_id ON runs (task_id, queued_at, id);
CREATE INDEX runs_by_started_sort ON runs (started_at NULLS FIRST, queued_at, id);
CREATE INDEX runs_by_finished_sort ON runs (finished_at NULLS FIRST, queued_at, id);
CREATE INDEX runs_by_duration_sort ON runs ((finished_at - started_at) NULLS FIRST, queued_at, id);
CREATE INDEX runs_by_state_sort ON runs ((state COLLATE "C") NULLS FIRST, queued_at, id);
CREATE INDEX runs_by_task_sort ON runs ((task_id COLLATE "C") NULLS FIRST, queued_at, id);
CREATE INDEX runs_by_cpu_sort ON runs (cpu_s NULLS FIRST, queued_at, id);
CREATE INDEX runs_by_memory_sort ON runs (peak_memory_bytes NULLS FIRST, queued_at, id);
CREATE INDEX runs_by_trigger_queued ON runs (trigger, queued_at, id);
CREATE INDEX runs_by_state_queued ON runs (state, queued_at, id);
DROP INDEX runs_by_queued;
DROP INDEX runs_by_task;
DROP INDEX runs_by_end;
