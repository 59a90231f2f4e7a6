-- Schema v4: stores, label stock, kiosk credentials, customer accounts,
-- payments, and what became of labels that failed to print.

CREATE TABLE stores (
  id         TEXT PRIMARY KEY,
  name       TEXT    NOT NULL,
  created_at INTEGER NOT NULL
);

-- A provisioned kiosk belongs to a store and has broker credentials.
ALTER TABLE kiosks ADD COLUMN store TEXT REFERENCES stores (id);
ALTER TABLE kiosks ADD COLUMN password_hash TEXT;

-- Serialized label stock (patent Figs. 4-5): sheets of ten. A sheet is
-- issued to a store, then assigned to one of its kiosks when staff load it,
-- or to a customer account for the web portal. used counts its labels that
-- carry an indicium; at ten the sheet is invalidated.
CREATE TABLE sheets (
  serial         INTEGER PRIMARY KEY,
  store          TEXT    NOT NULL REFERENCES stores (id),
  kiosk_id       TEXT,
  account_id     INTEGER,
  used           INTEGER NOT NULL DEFAULT 0 CHECK (used >= 0 AND used <= 10),
  issued_at      INTEGER NOT NULL,
  assigned_at    INTEGER,
  invalidated_at INTEGER
);
CREATE INDEX sheets_kiosk ON sheets (kiosk_id);
CREATE INDEX sheets_account ON sheets (account_id);

CREATE TABLE accounts (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  login         TEXT    NOT NULL UNIQUE,
  password_hash TEXT    NOT NULL,
  balance       INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
  card_token    TEXT,
  card_brand    TEXT,
  card_last4    TEXT,
  zip           TEXT    NOT NULL DEFAULT '00000',
  created_at    INTEGER NOT NULL
);

-- Every movement of a prepaid balance.
CREATE TABLE account_entries (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  account_id INTEGER NOT NULL REFERENCES accounts (id),
  amount     INTEGER NOT NULL,
  kind       TEXT    NOT NULL CHECK (kind IN ('fund', 'hold', 'release', 'refund')),
  ref        TEXT    NOT NULL,
  at         INTEGER NOT NULL
);

-- One payment per purchase request: recorded as authorizing before the
-- gateway is asked (so a crash in between is voided by attempt_key at the
-- next start), then authorized, then captured or voided; refunded in part
-- or whole afterwards. Card numbers are never stored.
CREATE TABLE payments (
  kiosk_id    TEXT    NOT NULL,
  request_id  TEXT    NOT NULL,
  method      TEXT    NOT NULL CHECK (method IN ('card', 'account')),
  account_id  INTEGER,
  attempt_key TEXT    NOT NULL,
  gateway_ref TEXT,
  brand       TEXT,
  last4       TEXT,
  amount      INTEGER NOT NULL CHECK (amount > 0),
  state       TEXT    NOT NULL CHECK (state IN ('authorizing', 'authorized', 'captured', 'voided')),
  captured    INTEGER NOT NULL DEFAULT 0,
  refunded    INTEGER NOT NULL DEFAULT 0 CHECK (refunded <= captured),
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL,
  PRIMARY KEY (kiosk_id, request_id)
);

-- A label whose print failed gets one remedy: a reprint on a new label
-- under a new indicium, or a refund.
CREATE TABLE remedies (
  label         TEXT PRIMARY KEY,
  kind          TEXT    NOT NULL CHECK (kind IN ('reprint', 'refund')),
  kiosk_id      TEXT    NOT NULL,
  request_id    TEXT    NOT NULL,
  new_label     TEXT,
  amount        INTEGER NOT NULL,
  at            INTEGER NOT NULL
);

-- Offers of a used label: evidence for fraud alerts.
CREATE TABLE label_reuse (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  label      TEXT    NOT NULL,
  kiosk_id   TEXT    NOT NULL,
  request_id TEXT    NOT NULL,
  at         INTEGER NOT NULL
);

ALTER TABLE indicia ADD COLUMN printed_at INTEGER;
ALTER TABLE indicia ADD COLUMN reprint_of TEXT;
