-- One-time capabilities already used (signed upload URLs, multipart completes, playground login
-- links, closed sessions): a row per use, shared by every server; forgotten once it expires.
CREATE TABLE spent_capabilities (
    id TEXT PRIMARY KEY,
    spent_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX spent_capabilities_expiry ON spent_capabilities (expires_at);
