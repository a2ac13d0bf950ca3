-- Run search: an index by state (with the time, for the newest first) of the runs that ended
-- badly, and a trigram full-text index of what `q` searches in a run (its error and params), kept
-- in step by triggers and linked by rowid. Completed runs are most runs and are not indexed: every
-- index costs each persisted run a write. Both are replaced in 0006.
CREATE INDEX runs_ended_badly ON runs (state, queued_at) WHERE state IN ('failed', 'stopped', 'interrupted');
CREATE VIRTUAL TABLE runs_text USING fts5(body, tokenize = 'trigram', detail = 'none');
INSERT INTO runs_text (rowid, body)
    SELECT rowid, coalesce(error, '') || ' ' || params FROM runs WHERE error IS NOT NULL OR params != '{}';
CREATE TRIGGER runs_text_insert AFTER INSERT ON runs
WHEN new.error IS NOT NULL OR new.params != '{}' BEGIN
    INSERT INTO runs_text (rowid, body) VALUES (new.rowid, coalesce(new.error, '') || ' ' || new.params);
END;
CREATE TRIGGER runs_text_error AFTER UPDATE OF error ON runs WHEN new.error IS NOT old.error BEGIN
    DELETE FROM runs_text WHERE rowid = old.rowid;
    INSERT INTO runs_text (rowid, body)
    SELECT new.rowid, coalesce(new.error, '') || ' ' || new.params
    WHERE new.error IS NOT NULL OR new.params != '{}';
END;
CREATE TRIGGER runs_text_delete AFTER DELETE ON runs BEGIN
    DELETE FROM runs_text WHERE rowid = old.rowid;
END;
