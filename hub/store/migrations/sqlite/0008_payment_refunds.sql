-- Schema v8: each refund of a payment once, by its reference. The money
-- moves first (idempotent at the gateway and in accounts by the same
-- reference); a retry after a crash then finds the row and does not add
-- to payments.refunded a second time.
CREATE TABLE payment_refunds (
  kiosk_id   TEXT    NOT NULL,
  request_id TEXT    NOT NULL,
  ref        TEXT    NOT NULL,
  amount     INTEGER NOT NULL CHECK (amount > 0),
  created_at INTEGER NOT NULL,
  PRIMARY KEY (kiosk_id, request_id, ref)
);

-- Refunds made before this table existed, one row each payment.
INSERT INTO payment_refunds (kiosk_id, request_id, ref, amount, created_at)
  SELECT kiosk_id, request_id, 'before-v8', refunded, updated_at FROM payments WHERE refunded > 0;
