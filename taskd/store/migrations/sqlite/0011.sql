-- The audit trail: what was done through the API, or refused, by whom (the token's name), from
-- where and with what answer. Pruned by age with the runs.
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    action TEXT NOT NULL,
    actor TEXT,
    role TEXT,
    remote TEXT,
    target TEXT,
    status INTEGER NOT NULL,
    detail TEXT
);
CREATE INDEX audit_by_time ON audit (at);
