-- Cross-job batching: jobs with the same key may share the model's forward passes.
ALTER TABLE jobs ADD COLUMN batch_key TEXT;
CREATE INDEX jobs_batch ON jobs (batch_key, state, priority DESC, seq);
