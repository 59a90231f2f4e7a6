-- Schema v2: MPSD leases, the hash-chained audit log, alerts, postal
-- reports and the inspection clock.

-- A PSDM worker checks an MPSD out by holding its lease; lease_until is
-- unix microseconds. reported_at is when the PSD was last in a postal
-- report (its inspection); it starts at creation.
ALTER TABLE psd ADD COLUMN lease_holder TEXT;
ALTER TABLE psd ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
ALTER TABLE psd ADD COLUMN reported_at INTEGER NOT NULL DEFAULT 0;
UPDATE psd SET reported_at = created_at;

-- Every register change, in order. hash = SHA-256(previous hash || entry).
CREATE TABLE audit (
  seq    INTEGER PRIMARY KEY,
  at     INTEGER NOT NULL,
  psd    INTEGER NOT NULL,
  kind   TEXT    NOT NULL,
  amount INTEGER NOT NULL,
  ar     INTEGER NOT NULL,
  dr     INTEGER NOT NULL,
  ref    TEXT    NOT NULL,
  hash   BLOB    NOT NULL
);
CREATE INDEX audit_psd ON audit (psd, seq);

-- The chain's head, one row; appending locks it.
CREATE TABLE audit_head (
  id   INTEGER PRIMARY KEY CHECK (id = 1),
  seq  INTEGER NOT NULL,
  hash BLOB    NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));

CREATE TABLE alerts (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  kind       TEXT    NOT NULL,
  subject    TEXT    NOT NULL,
  message    TEXT    NOT NULL,
  created_at INTEGER NOT NULL,
  acked_at   INTEGER,
  acked_by   TEXT
);
-- At most one open alert per kind and subject.
CREATE UNIQUE INDEX alerts_open ON alerts (kind, subject) WHERE acked_at IS NULL;

CREATE TABLE reports (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  period_from INTEGER NOT NULL,
  period_to   INTEGER NOT NULL,
  created_at  INTEGER NOT NULL,
  body        BLOB    NOT NULL,
  state       TEXT    NOT NULL CHECK (state IN ('pending', 'accepted', 'refused')),
  pa_ref      TEXT,
  answer      TEXT
);

ALTER TABLE indicia ADD COLUMN void_reason TEXT;
ALTER TABLE fundings ADD COLUMN request_id TEXT;
