-- fal's platform controls: X-Fal-No-Retry (a job whose worker dies is not run again) and
-- X-Fal-Store-IO: 0 (the input goes once the job has run; the output once read, or unread
-- after an hour — output_dropped_at says when).
ALTER TABLE jobs ADD COLUMN no_retry INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN store_io INTEGER NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN output_dropped_at REAL;
CREATE INDEX jobs_unstored_outputs ON jobs (finished_at) WHERE store_io = 0 AND output IS NOT NULL;
