-- Schema v45: an API token may be a metrics token, which reads /metrics
-- and nothing else (the one a scraper holds). SQLite cannot change a
-- column's CHECK, so the table is made again with it.
CREATE TABLE api_tokens_v45 (
  hash        BLOB    PRIMARY KEY,
  operator_id INTEGER NOT NULL REFERENCES operators (id),
  name        TEXT    NOT NULL,
  created_at  INTEGER NOT NULL,
  revoked_at  INTEGER,
  scope       TEXT    NOT NULL DEFAULT 'read' CHECK (scope IN ('read', 'write', 'metrics')),
  expires_at  INTEGER NOT NULL DEFAULT 0
);
INSERT INTO api_tokens_v45 (hash, operator_id, name, created_at, revoked_at, scope, expires_at)
  SELECT hash, operator_id, name, created_at, revoked_at, scope, expires_at FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_v45 RENAME TO api_tokens;
