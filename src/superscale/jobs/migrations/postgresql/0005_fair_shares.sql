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
-- Unfinished jobs counted as they come and go, per endpoint, key and state, so that a submit
-- checks the queue's limits in O(1) rather than counting the queue (finished jobs are not
-- counted: no limit reads them). Both rows a move touches are locked in one order (by state),
-- so that concurrent moves (a claim, a requeue) cannot deadlock.
CREATE TABLE job_counts (
    endpoint text NOT NULL,
    owner text NOT NULL,
    state text NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (endpoint, owner, state)
);
INSERT INTO job_counts (endpoint, owner, state, n)
SELECT endpoint, owner, state, COUNT(*) FROM jobs WHERE state != 'COMPLETED'
GROUP BY endpoint, owner, state;
CREATE FUNCTION superscale_count_jobs() RETURNS trigger AS $$
DECLARE
    s text;
BEGIN
    FOR s IN
        SELECT x.state FROM (VALUES (OLD.state, -1), (NEW.state, 1)) AS x (state, delta)
        WHERE x.state IS NOT NULL AND x.state != 'COMPLETED' ORDER BY x.state
    LOOP
        IF TG_OP != 'INSERT' AND s = OLD.state AND s IS DISTINCT FROM NEW.state THEN
            UPDATE job_counts SET n = n - 1
            WHERE endpoint = OLD.endpoint AND owner = OLD.owner AND state = s;
        END IF;
        IF TG_OP != 'DELETE' AND s = NEW.state AND s IS DISTINCT FROM OLD.state THEN
            INSERT INTO job_counts (endpoint, owner, state, n)
            VALUES (NEW.endpoint, NEW.owner, s, 1)
            ON CONFLICT (endpoint, owner, state) DO UPDATE SET n = job_counts.n + 1;
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER jobs_counted AFTER INSERT OR DELETE ON jobs
FOR EACH ROW EXECUTE FUNCTION superscale_count_jobs();
CREATE TRIGGER jobs_counted_moved AFTER UPDATE OF state ON jobs
FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION superscale_count_jobs();
