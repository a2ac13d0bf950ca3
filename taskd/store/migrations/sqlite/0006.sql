-- Run search without a full scan: an index for each sort key, by state and by trigger (these two
-- with the queued time, so ties come in order). The state index takes over from the partial ones.
-- The text index is kept in step by the writer instead of triggers: with an insert or update
-- trigger on `runs`, each of its indexes cost a run's write about 5 us more (25 us a run with these
-- five, measured, against 10 us without the triggers). It now keeps the trigrams' positions, so a
-- substring is found as a phrase of trigrams, from the index alone (a LIKE reads every candidate's
-- text: 200 ms against 14 ms for a word in 300,000 runs).
DROP TRIGGER runs_text_insert;
DROP TRIGGER runs_text_error;
DROP TRIGGER runs_text_delete;
DROP TABLE runs_text;
CREATE VIRTUAL TABLE runs_text USING fts5(body, tokenize = 'trigram', detail = 'full');
INSERT INTO runs_text (rowid, body)
    SELECT rowid, coalesce(error, '') || ' ' || params FROM runs WHERE error IS NOT NULL OR params != '{}';
CREATE TRIGGER runs_text_delete AFTER DELETE ON runs BEGIN
    DELETE FROM runs_text WHERE rowid = old.rowid;
END;
DROP INDEX runs_active;
DROP INDEX runs_ended_badly;
CREATE INDEX runs_by_state ON runs (state, queued_at);
CREATE INDEX runs_by_trigger ON runs (trigger, queued_at);
CREATE INDEX runs_by_start ON runs (started_at);
CREATE INDEX runs_by_end ON runs (finished_at);
CREATE INDEX runs_by_duration ON runs ((finished_at - started_at));
