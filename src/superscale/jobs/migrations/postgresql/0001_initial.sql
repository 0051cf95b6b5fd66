-- Jobs, their logs, API keys and webhook deliveries.
CREATE TABLE jobs (
    seq bigserial PRIMARY KEY,               -- submission order
    id text NOT NULL UNIQUE,
    endpoint text NOT NULL,
    owner text NOT NULL,
    input jsonb NOT NULL,
    checkpoint text NOT NULL,
    state text NOT NULL,
    version bigint NOT NULL,
    created_at double precision NOT NULL,
    started_at double precision,
    finished_at double precision,
    output jsonb,
    error jsonb,
    inference_time double precision,
    attempts integer NOT NULL DEFAULT 0,
    cancel_requested boolean NOT NULL DEFAULT false,
    worker_id text,
    lease_expires_at double precision,
    webhook_url text,
    priority integer NOT NULL DEFAULT 0,
    start_deadline double precision,
    file_ttl double precision
);
CREATE INDEX jobs_queue ON jobs (priority DESC, seq) WHERE state = 'IN_QUEUE';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'IN_PROGRESS';
CREATE INDEX jobs_endpoint_state ON jobs (endpoint, state);
CREATE TABLE job_logs (
    id bigserial PRIMARY KEY,
    request_id text NOT NULL,
    message text NOT NULL,
    level text NOT NULL,
    timestamp double precision NOT NULL
);
CREATE INDEX job_logs_request ON job_logs (request_id, id);
CREATE TABLE api_keys (
    key_id text PRIMARY KEY,
    secret_hash text NOT NULL,
    name text NOT NULL,
    created_at double precision NOT NULL,
    revoked_at double precision
);
CREATE TABLE webhooks (
    id bigserial PRIMARY KEY,
    request_id text NOT NULL,
    url text NOT NULL,
    body bytea NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at double precision,        -- NULL once delivered or given up
    delivered_at double precision,
    last_error text,
    extra jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX webhooks_due ON webhooks (next_attempt_at) WHERE delivered_at IS NULL;
