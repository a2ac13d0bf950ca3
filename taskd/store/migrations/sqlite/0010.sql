-- What each run's step processes used (CPU seconds, the largest resident set or how large it could
-- have been, how many processes, where the figures come from, the steps whose use cannot be told),
-- and an index for each figure run search sorts by.
ALTER TABLE runs ADD COLUMN cpu_s REAL;
ALTER TABLE runs ADD COLUMN peak_memory_bytes INTEGER;
ALTER TABLE runs ADD COLUMN processes INTEGER;
ALTER TABLE runs ADD COLUMN usage_source TEXT;
ALTER TABLE runs ADD COLUMN usage_unknown TEXT;
ALTER TABLE runs ADD COLUMN peak_memory_at_most INTEGER;
CREATE INDEX runs_by_cpu ON runs (cpu_s);
CREATE INDEX runs_by_peak_memory ON runs (peak_memory_bytes);
