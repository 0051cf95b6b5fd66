-- Jobs, their logs, API keys and webhook deliveries.
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- submission order
    id TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    owner TEXT NOT NULL,
    input TEXT NOT NULL,                     -- JSON
    checkpoint TEXT NOT NULL,
    state TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    output TEXT,                             -- JSON
    error TEXT,                              -- JSON of JobError
    inference_time REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker_id TEXT,
    lease_expires_at REAL,
    webhook_url TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    start_deadline REAL,
    file_ttl REAL
);
CREATE INDEX jobs_queue ON jobs (state, priority DESC, seq);
CREATE INDEX jobs_endpoint_state ON jobs (endpoint, state);
CREATE TABLE job_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    message TEXT NOT NULL,
    level TEXT NOT NULL,
    timestamp REAL NOT NULL
);
CREATE INDEX job_logs_request ON job_logs (request_id, id);
CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE webhooks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    url TEXT NOT NULL,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,                    -- NULL once delivered or given up
    delivered_at REAL,
    last_error TEXT,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX webhooks_due ON webhooks (next_attempt_at);
