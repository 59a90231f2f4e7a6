-- Schema v29: one-time password-reset links for portal customers. Only the
-- token's SHA-256 is kept, so a copy of the database resets no password. A
-- link sets a password once (used_at) before it expires; a new password,
-- by change or by reset, spends the account's other open links.
CREATE TABLE password_resets (
  hash       BYTEA  PRIMARY KEY,
  account_id BIGINT NOT NULL REFERENCES accounts (id),
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  used_at    BIGINT
);
CREATE INDEX password_resets_account ON password_resets (account_id);
