-- Cross-job batching: jobs with the same key may share the model's forward passes.
ALTER TABLE jobs ADD COLUMN batch_key text;
CREATE INDEX jobs_batch ON jobs (batch_key, priority DESC, seq) WHERE state = 'IN_QUEUE';
