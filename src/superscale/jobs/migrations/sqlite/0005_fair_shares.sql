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
