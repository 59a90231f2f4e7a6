-- Schema v24: an attempt whose hold is being given back is 'voiding'
-- before the gateway is asked to void it. The sale's commit needs the
-- attempt still 'authorizing', so a hub whose lease lapsed mid-sale cannot
-- record a sale on a hold another hub is voiding. SQLite cannot change a
-- CHECK in place: the table is copied.
CREATE TABLE payments_v24 (
  kiosk_id    TEXT    NOT NULL,
  request_id  TEXT    NOT NULL,
  method      TEXT    NOT NULL CHECK (method IN ('card', 'account')),
  account_id  INTEGER,
  attempt_key TEXT    NOT NULL,
  gateway_ref TEXT,
  brand       TEXT,
  last4       TEXT,
  amount      INTEGER NOT NULL CHECK (amount > 0),
  state       TEXT    NOT NULL CHECK (state IN ('authorizing', 'authorized', 'captured', 'voiding', 'voided')),
  captured    INTEGER NOT NULL DEFAULT 0,
  refunded    INTEGER NOT NULL DEFAULT 0 CHECK (refunded <= captured),
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL,
  hub         TEXT,
  PRIMARY KEY (kiosk_id, request_id)
);
INSERT INTO payments_v24 (kiosk_id, request_id, method, account_id, attempt_key, gateway_ref, brand, last4, amount, state, captured, refunded, created_at, updated_at, hub)
  SELECT kiosk_id, request_id, method, account_id, attempt_key, gateway_ref, brand, last4, amount, state, captured, refunded, created_at, updated_at, hub FROM payments;
DROP TABLE payments;
ALTER TABLE payments_v24 RENAME TO payments;
