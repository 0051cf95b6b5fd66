-- Every statement of the job store, written once for both dialects.
--
-- `-- name: x` starts statement x. Parameters are named (`:name`). Words in braces are
-- filled in per dialect: {job_columns} (the columns `Job` is read from), {lock_row} (PostgreSQL:
-- FOR UPDATE; SQLite: nothing, its write transactions hold the whole database) and
-- {skip_locked} (PostgreSQL: FOR UPDATE SKIP LOCKED, so concurrent workers never wait on each
-- other; SQLite: nothing). {json_items} is the function that lists a JSON array's elements as
-- rows of `value`; {no_input} is an empty JSON object. PostgreSQL types a parameter at its first use: where a parameter may be NULL,
-- its first use gives it a type.

-- name: count_unfinished
-- From the counts triggers keep (migration 0005): a few rows, however long the queue.
SELECT COALESCE(SUM(n), 0) AS n FROM job_counts WHERE endpoint = :endpoint;

-- name: count_waiting
SELECT COALESCE(SUM(n), 0) AS n FROM job_counts
WHERE endpoint = :endpoint AND state = 'IN_QUEUE';

-- name: count_owner_waiting
SELECT COALESCE(SUM(n), 0) AS n FROM job_counts WHERE owner = :owner AND state = 'IN_QUEUE';

-- name: recent_run_times
SELECT finished_at - started_at AS seconds FROM jobs
WHERE endpoint = :endpoint AND state = 'COMPLETED' AND started_at IS NOT NULL
ORDER BY seq DESC LIMIT 20;

-- name: insert_job
INSERT INTO jobs (id, endpoint, owner, input, checkpoint, state, version, created_at,
                  webhook_url, priority, start_deadline, file_ttl, batch_key, no_retry, store_io)
VALUES (:id, :endpoint, :owner, :input, :checkpoint, 'IN_QUEUE', 1, :now,
        :webhook_url, :priority, :start_deadline, :file_ttl, :batch_key, :no_retry, :store_io)
RETURNING {job_columns}, seq;

-- name: get_job
SELECT {job_columns} FROM jobs WHERE id = :id;

-- name: job_version
SELECT version FROM jobs WHERE id = :id;

-- name: queued_jobs
-- The runnable queue, for `positions.QueueOrder`.
SELECT id, owner, priority, seq FROM jobs
WHERE state = 'IN_QUEUE' AND (start_deadline IS NULL OR start_deadline > :now);

-- name: owner_turns
SELECT owner, last_turn FROM owner_turns;

-- name: job_place
SELECT id, owner, priority, seq FROM jobs WHERE id = :id AND state = 'IN_QUEUE';

-- name: claim
-- The runnable job next in turn, taken in one statement: the highest priority first; within
-- it, the key served least recently (never: first), that key's oldest job.
UPDATE jobs SET state = 'IN_PROGRESS', worker_id = :worker_id,
    lease_expires_at = :lease_expires_at, started_at = :now,
    attempts = attempts + 1, version = version + 1
WHERE seq = (
    SELECT q.seq FROM jobs q LEFT JOIN owner_turns t ON t.owner = q.owner
    WHERE q.state = 'IN_QUEUE'
      AND (q.start_deadline IS NULL OR q.start_deadline > :now)
      AND (q.checkpoint IN (SELECT value FROM {json_items}(:checkpoints)) OR :checkpoints IS NULL)
      AND (CAST(:batch_key AS TEXT) IS NULL OR q.batch_key = :batch_key)
    ORDER BY q.priority DESC, COALESCE(t.last_turn, 0), q.seq
    LIMIT 1
    {skip_locked_jobs}
)
RETURNING {job_columns};

-- name: take_turn
INSERT INTO owner_turns (owner, last_turn) VALUES (:owner, :now)
ON CONFLICT (owner) DO UPDATE SET last_turn = excluded.last_turn;

-- name: heartbeat
-- A renewal is not a change anyone waits for: no version bump.
UPDATE jobs SET lease_expires_at = :lease_expires_at
WHERE id = :id AND worker_id = :worker_id AND state = 'IN_PROGRESS';

-- name: complete
-- A job that may not keep its payloads (store_io off) loses its input once it has run.
UPDATE jobs SET state = 'COMPLETED', output = :output, inference_time = :inference_time,
    input = CASE WHEN store_io THEN input ELSE {no_input} END,
    finished_at = :now, worker_id = NULL, lease_expires_at = NULL, version = version + 1
WHERE id = :id AND worker_id = :worker_id AND state = 'IN_PROGRESS';

-- name: fail
-- worker_id NULL: whoever holds the job, or nobody.
UPDATE jobs SET state = 'COMPLETED', error = :error, finished_at = :now,
    input = CASE WHEN store_io THEN input ELSE {no_input} END, worker_id = NULL, lease_expires_at = NULL, version = version + 1
WHERE id = :id AND state != 'COMPLETED'
  AND (CAST(:worker_id AS TEXT) IS NULL OR (worker_id = :worker_id AND state = 'IN_PROGRESS'))
RETURNING webhook_url;

-- name: job_state
SELECT state FROM jobs WHERE id = :id {lock_row};

-- name: request_cancel
UPDATE jobs SET cancel_requested = TRUE, version = version + 1 WHERE id = :id;

-- name: expired_leases
SELECT id, attempts, cancel_requested, no_retry FROM jobs
WHERE state = 'IN_PROGRESS' AND lease_expires_at < :now
{skip_locked};

-- name: requeue
UPDATE jobs SET state = 'IN_QUEUE', worker_id = NULL, lease_expires_at = NULL,
    version = version + 1
WHERE id = :id;

-- name: release
-- Handed back unfinished by a stopping worker: queued again, the attempt not counted.
UPDATE jobs SET state = 'IN_QUEUE', worker_id = NULL, lease_expires_at = NULL,
    attempts = attempts - 1, version = version + 1
WHERE id = :id AND worker_id = :worker_id AND state = 'IN_PROGRESS';

-- name: past_start_deadline
SELECT id FROM jobs WHERE state = 'IN_QUEUE' AND start_deadline <= :now {skip_locked};

-- name: delete_old_logs
DELETE FROM job_logs WHERE request_id IN (
    SELECT id FROM jobs WHERE state = 'COMPLETED' AND finished_at < :before);

-- name: delete_old_webhooks
-- Pending deliveries stay.
DELETE FROM webhooks WHERE next_attempt_at IS NULL AND request_id IN (
    SELECT id FROM jobs WHERE state = 'COMPLETED' AND finished_at < :before);

-- name: delete_old_jobs
DELETE FROM jobs WHERE state = 'COMPLETED' AND finished_at < :before;

-- name: unread_output
SELECT output FROM jobs WHERE id = :id AND NOT store_io AND output IS NOT NULL {lock_row};

-- name: drop_output
UPDATE jobs SET output = NULL, output_dropped_at = :now WHERE id = :id;

-- name: drop_unread_outputs
UPDATE jobs SET output = NULL, output_dropped_at = :now
WHERE NOT store_io AND output IS NOT NULL AND finished_at < :before;

-- name: count_by_state
SELECT state, COUNT(*) AS n FROM jobs GROUP BY state;

-- name: bump_version
UPDATE jobs SET version = version + 1 WHERE id = :id;

-- name: insert_log
INSERT INTO job_logs (request_id, message, level, timestamp)
VALUES (:request_id, :message, :level, :now);

-- name: logs
SELECT message, level, timestamp FROM job_logs WHERE request_id = :request_id ORDER BY id;

-- name: insert_key
INSERT INTO api_keys (key_id, secret_hash, name, created_at, revoked_at, max_queue, max_rps,
                      upload_bytes_per_day)
VALUES (:key_id, :secret_hash, :name, :created_at, :revoked_at, :max_queue, :max_rps,
        :upload_bytes_per_day);

-- name: get_key
SELECT {key_columns} FROM api_keys WHERE key_id = :key_id;

-- name: list_keys
SELECT {key_columns} FROM api_keys ORDER BY created_at, key_id;

-- name: set_key_limits
UPDATE api_keys SET max_queue = :max_queue, max_rps = :max_rps,
    upload_bytes_per_day = :upload_bytes_per_day
WHERE key_id = :key_id;

-- name: add_upload_bytes
-- The day's total after adding; the caller refuses (and rolls back) past the key's limit.
INSERT INTO upload_usage (owner, day, bytes) VALUES (:owner, :day, :bytes)
ON CONFLICT (owner, day) DO UPDATE SET bytes = upload_usage.bytes + excluded.bytes
RETURNING bytes;

-- name: delete_old_upload_usage
DELETE FROM upload_usage WHERE day < :day;

-- name: revoke_key
UPDATE api_keys SET revoked_at = :now WHERE key_id = :key_id AND revoked_at IS NULL;

-- name: insert_webhook
INSERT INTO webhooks (request_id, url, body, next_attempt_at)
VALUES (:request_id, :url, :body, :now);

-- name: claim_due_webhooks
-- Claiming pushes a delivery's next attempt back by the lease.
UPDATE webhooks SET next_attempt_at = :lease_expires_at WHERE id IN (
    SELECT id FROM webhooks WHERE delivered_at IS NULL AND next_attempt_at <= :now
    ORDER BY next_attempt_at, id LIMIT :limit
    {skip_locked})
RETURNING {webhook_columns};

-- name: webhook_result
UPDATE webhooks SET attempts = attempts + 1, last_error = :error,
    delivered_at = :delivered_at, next_attempt_at = :next_attempt_at
WHERE id = :id;

-- name: webhooks_of
SELECT {webhook_columns} FROM webhooks WHERE request_id = :request_id ORDER BY id;

-- name: spend
-- A row comes back the first time only: the use and the check are one statement.
INSERT INTO spent_capabilities (id, spent_at, expires_at) VALUES (:id, :now, :expires_at)
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- name: unspend
DELETE FROM spent_capabilities WHERE id = :id;

-- name: is_spent
SELECT 1 AS spent FROM spent_capabilities WHERE id = :id;

-- name: forget_spent
DELETE FROM spent_capabilities WHERE expires_at < :now;
