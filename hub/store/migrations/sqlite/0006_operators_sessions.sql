-- Schema v6: the people behind the web pages. Operators are vendor ops
-- (everything) or store staff (their stores only); API tokens let ops
-- script the operator API; sessions are logins of operators and portal
-- customers. Tokens and session ids are kept only as SHA-256 hashes.

CREATE TABLE operators (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  login         TEXT    NOT NULL UNIQUE,
  password_hash TEXT    NOT NULL,
  role          TEXT    NOT NULL CHECK (role IN ('ops', 'staff')),
  created_at    INTEGER NOT NULL
);

CREATE TABLE operator_stores (
  operator_id INTEGER NOT NULL REFERENCES operators (id),
  store       TEXT    NOT NULL REFERENCES stores (id),
  PRIMARY KEY (operator_id, store)
);

CREATE TABLE api_tokens (
  hash        BLOB    PRIMARY KEY,
  operator_id INTEGER NOT NULL REFERENCES operators (id),
  name        TEXT    NOT NULL,
  created_at  INTEGER NOT NULL,
  revoked_at  INTEGER
);

CREATE TABLE sessions (
  hash       BLOB    PRIMARY KEY,
  realm      TEXT    NOT NULL CHECK (realm IN ('portal', 'console')),
  subject    INTEGER NOT NULL,
  csrf       TEXT    NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- Activity pages and "sales today" read sales by time.
CREATE INDEX sales_created ON sales (created_at);
