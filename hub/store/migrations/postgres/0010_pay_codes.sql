-- Schema v10: one-time pay codes. A registered customer makes one in the
-- portal to pay from the prepaid balance at a kiosk, so that a kiosk's own
-- credentials never move a customer's money. Only the code's SHA-256 is
-- kept. A code pays for one purchase (used_by names it) before it expires.
CREATE TABLE pay_codes (
  hash       BYTEA  PRIMARY KEY,
  account_id BIGINT NOT NULL REFERENCES accounts (id),
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  used_at    BIGINT,
  used_by    TEXT
);
CREATE INDEX pay_codes_account ON pay_codes (account_id);
