-- Schema v7 (PostgreSQL): one-time enrollment codes. A kiosk trades its code for its
-- broker credentials once. Only a hash of the code is kept, and the
-- password is sealed (AES-GCM) under a key derived from the code, so
-- neither can be read back from the store.
CREATE TABLE enrollments (
  code_hash  BYTEA    PRIMARY KEY,
  kiosk_id   TEXT    NOT NULL REFERENCES kiosks (kiosk_id),
  sealed     BYTEA    NOT NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  used_at    BIGINT
);
CREATE INDEX enrollments_kiosk ON enrollments (kiosk_id);

-- The ZIP code a store mails from: an enrolling kiosk learns it with its
-- credentials, and signs it into every stamp as the origin.
ALTER TABLE stores ADD COLUMN zip TEXT;
