-- The node that ran each run (node.name).
ALTER TABLE runs ADD COLUMN node TEXT;
