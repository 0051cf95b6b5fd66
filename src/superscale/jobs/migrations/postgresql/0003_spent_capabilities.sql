-- One-time capabilities already used (signed upload URLs, multipart completes, playground login
-- links, closed sessions): a row per use, shared by every server; forgotten once it expires.
CREATE TABLE spent_capabilities (
    id text PRIMARY KEY,
    spent_at double precision NOT NULL,
    expires_at double precision NOT NULL
);
CREATE INDEX spent_capabilities_expiry ON spent_capabilities (expires_at);
