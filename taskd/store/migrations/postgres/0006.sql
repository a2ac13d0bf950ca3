-- What each run's step processes used (CPU seconds, the largest resident set or how large it could
-- have been, how many processes, where the figures come from, the steps whose use cannot be told). Run search sorts by the
-- figures as it sorts by the other columns.
ALTER TABLE runs ADD COLUMN cpu_s DOUBLE PRECISION;
ALTER TABLE runs ADD COLUMN peak_memory_bytes BIGINT;
ALTER TABLE runs ADD COLUMN processes INTEGER;
ALTER TABLE runs ADD COLUMN usage_source TEXT;
ALTER TABLE runs ADD COLUMN usage_unknown TEXT;
ALTER TABLE runs ADD COLUMN peak_memory_at_most BIGINT;
