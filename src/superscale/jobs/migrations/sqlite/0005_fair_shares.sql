-- Fair shares between keys: per-key limits (NULL: the server's setting), whose turn it is
-- (claims go round the keys with queued jobs, least recently served first) and the bytes each
-- key uploaded per UTC day.
ALTER TABLE api_keys ADD COLUMN max_queue INTEGER;
ALTER TABLE api_keys ADD COLUMN max_rps REAL;
ALTER TABLE api_keys ADD COLUMN upload_bytes_per_day INTEGER;
CREATE TABLE owner_turns (
    owner TEXT PRIMARY KEY,
    last_turn REAL NOT NULL
);
CREATE TABLE upload_usage (
    owner TEXT NOT NULL,
    day INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (owner, day)
);
CREATE INDEX jobs_owner_state ON jobs (owner, state);
-- Unfinished jobs counted as they come and go, per endpoint, key and state, so that a submit
-- checks the queue's limits in O(1) rather than counting the queue (finished jobs are not
-- counted: no limit reads them).
CREATE TABLE job_counts (
    endpoint TEXT NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (endpoint, owner, state)
);
INSERT INTO job_counts (endpoint, owner, state, n)
SELECT endpoint, owner, state, COUNT(*) FROM jobs WHERE state != 'COMPLETED'
GROUP BY endpoint, owner, state;
CREATE TRIGGER jobs_counted_in AFTER INSERT ON jobs WHEN NEW.state != 'COMPLETED'
BEGIN
    INSERT OR IGNORE INTO job_counts (endpoint, owner, state, n)
    VALUES (NEW.endpoint, NEW.owner, NEW.state, 0);
    UPDATE job_counts SET n = n + 1
    WHERE endpoint = NEW.endpoint AND owner = NEW.owner AND state = NEW.state;
END;
CREATE TRIGGER jobs_counted_moved AFTER UPDATE OF state ON jobs WHEN OLD.state != NEW.state
BEGIN
    UPDATE job_counts SET n = n - 1
    WHERE endpoint = OLD.endpoint AND owner = OLD.owner AND state = OLD.state;
    INSERT OR IGNORE INTO job_counts (endpoint, owner, state, n)
    SELECT NEW.endpoint, NEW.owner, NEW.state, 0 WHERE NEW.state != 'COMPLETED';
    UPDATE job_counts SET n = n + 1
    WHERE endpoint = NEW.endpoint AND owner = NEW.owner AND state = NEW.state;
END;
CREATE TRIGGER jobs_counted_out AFTER DELETE ON jobs WHEN OLD.state != 'COMPLETED'
BEGIN
    UPDATE job_counts SET n = n - 1
    WHERE endpoint = OLD.endpoint AND owner = OLD.owner AND state = OLD.state;
END;
