-- Frank hub schema v1. Money is INTEGER mills; times are INTEGER unix microseconds.

CREATE TABLE meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);

-- The GPSD and the pool of MPSDs (patent Figs. 9-10). control is
-- HMAC-SHA-256 over (kind, serial, ar, dr) under a key held in the HSM.
CREATE TABLE psd (
  serial     INTEGER PRIMARY KEY,
  kind       TEXT    NOT NULL CHECK (kind IN ('gpsd', 'mpsd')),
  ar         INTEGER NOT NULL CHECK (ar >= 0 AND ar <= 1099511627775),
  dr         INTEGER NOT NULL CHECK (dr >= 0 AND dr <= 4294967295),
  control    BLOB    NOT NULL,
  locked     TEXT,
  created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX psd_one_gpsd ON psd (kind) WHERE kind = 'gpsd';

-- Funds bought from the postal authority. A purchase is recorded as pending
-- before the authority is asked, so a crash in between is resumed with the
-- same request_id instead of buying twice.
CREATE TABLE fund_purchases (
  request_id TEXT PRIMARY KEY,
  amount     INTEGER NOT NULL CHECK (amount > 0),
  state      TEXT    NOT NULL CHECK (state IN ('pending', 'done')),
  pa_ref     TEXT,
  created_at INTEGER NOT NULL,
  done_at    INTEGER
);

-- GPSD -> MPSD transfers.
CREATE TABLE fundings (
  id      INTEGER PRIMARY KEY AUTOINCREMENT,
  mpsd    INTEGER NOT NULL REFERENCES psd (serial),
  amount  INTEGER NOT NULL CHECK (amount > 0),
  at      INTEGER NOT NULL
);

CREATE TABLE signing_keys (
  cert_serial    INTEGER PRIMARY KEY,
  key_label      TEXT    NOT NULL UNIQUE,
  public_key_pem TEXT    NOT NULL,
  created_at     INTEGER NOT NULL,
  retired_at     INTEGER
);

CREATE TABLE kiosks (
  kiosk_id   TEXT PRIMARY KEY,
  user_id    INTEGER NOT NULL UNIQUE,
  created_at INTEGER NOT NULL
);

-- One row per purchase request that reached a final answer. result holds
-- the exact bytes sent, so a repeated request_id gets the same bytes back.
CREATE TABLE sales (
  kiosk_id   TEXT    NOT NULL,
  request_id TEXT    NOT NULL,
  body_hash  BLOB    NOT NULL,
  status     TEXT    NOT NULL CHECK (status IN ('ok', 'rejected')),
  total      INTEGER NOT NULL,
  result     BLOB    NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (kiosk_id, request_id)
);

CREATE TABLE indicia (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  kiosk_id    TEXT    NOT NULL,
  request_id  TEXT    NOT NULL,
  mpsd        INTEGER NOT NULL REFERENCES psd (serial),
  label       TEXT    NOT NULL,
  rate_class  TEXT    NOT NULL,
  postage     INTEGER NOT NULL CHECK (postage > 0),
  ar          INTEGER NOT NULL,
  dr          INTEGER NOT NULL,
  cert_serial INTEGER NOT NULL,
  data        BLOB    NOT NULL,
  state       TEXT    NOT NULL DEFAULT 'issued' CHECK (state IN ('issued', 'printed', 'voided')),
  created_at  INTEGER NOT NULL,
  FOREIGN KEY (kiosk_id, request_id) REFERENCES sales (kiosk_id, request_id)
);
-- A label carries at most one live indicium: the database itself refuses a
-- second stamp on the same label.
CREATE UNIQUE INDEX indicia_live_label ON indicia (label) WHERE state <> 'voided';
CREATE INDEX indicia_request ON indicia (kiosk_id, request_id);
