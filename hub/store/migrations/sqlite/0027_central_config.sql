-- Schema v27: kiosk settings and store staff, managed centrally.
-- A scope is '*' (the fleet), 'store/ID' or 'kiosk/ID'; a kiosk's settings
-- are the fleet's, overlaid by its store's, overlaid by its own. A store's
-- staff, once any is added, replace the PIN and badges in each kiosk's own
-- file; a revoked member keeps their row, with who revoked them.
CREATE TABLE kiosk_settings (
  scope      TEXT    PRIMARY KEY,
  body       TEXT    NOT NULL,
  updated_by TEXT    NOT NULL,
  updated_at INTEGER NOT NULL
);

CREATE TABLE store_staff (
  store        TEXT    NOT NULL REFERENCES stores (id),
  name         TEXT    NOT NULL,
  pin_hash     TEXT,
  badge_sha256 TEXT,
  added_by     TEXT    NOT NULL,
  added_at     INTEGER NOT NULL,
  revoked_by   TEXT,
  revoked_at   INTEGER,
  changed_at   INTEGER NOT NULL,
  PRIMARY KEY (store, name)
);
CREATE INDEX store_staff_changed ON store_staff (changed_at);
