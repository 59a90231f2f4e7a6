-- Schema v20: hub liveness. Each running hub renews its row; a payment
-- records the hub that owns it, and only that hub settles it, or any
-- live hub once the owner's lease has lapsed.
CREATE TABLE hub_leases (
  hub        TEXT   PRIMARY KEY,
  until      BIGINT NOT NULL,
  started_at BIGINT NOT NULL
);
ALTER TABLE payments ADD COLUMN hub TEXT;
