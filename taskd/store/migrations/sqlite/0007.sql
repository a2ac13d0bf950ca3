-- Refused fires are summarised: one row per task and reason for a run of refusals (an overload,
-- a run still going), updated in place through its summary key, instead of a row per fire.
ALTER TABLE fires ADD COLUMN refusals INTEGER NOT NULL DEFAULT 1;
ALTER TABLE fires ADD COLUMN last_instant REAL;
ALTER TABLE fires ADD COLUMN summary_key TEXT;
CREATE UNIQUE INDEX fires_by_summary ON fires (summary_key);
