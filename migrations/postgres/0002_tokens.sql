-- API tokens (`[server] auth = "tokens"`). A token's secret is never stored: only its SHA-256, as hex.
-- A request's token is found by hashing the secret it presents and looking the hash up (secrets are
-- 32 random bytes, so a fast hash is the right one: there is nothing to guess). `name` is the actor
-- recorded for the token's actions; `scopes` is a comma-separated list (ingest, read, act, admin);
-- `team` restricts the token to one team's queues (NULL: every team). Revoked and expired tokens are
-- kept, so `sigloop token list` can show them.
CREATE TABLE api_tokens (
    id TEXT COLLATE "C" PRIMARY KEY,
    secret_hash TEXT COLLATE "C" NOT NULL UNIQUE,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    team TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);
