-- Fair shares between keys: per-key limits (NULL: the server's setting), whose turn it is
-- (claims go round the keys with queued jobs, least recently served first) and the bytes each
-- key uploaded per UTC day.
ALTER TABLE api_keys ADD COLUMN max_queue integer;
ALTER TABLE api_keys ADD COLUMN max_rps double precision;
ALTER TABLE api_keys ADD COLUMN upload_bytes_per_day bigint;
CREATE TABLE owner_turns (
    owner text PRIMARY KEY,
    last_turn double precision NOT NULL
);
CREATE TABLE upload_usage (
    owner text NOT NULL,
    day integer NOT NULL,
    bytes bigint NOT NULL,
    PRIMARY KEY (owner, day)
);
CREATE INDEX jobs_owner_state ON jobs (owner, state);
