-- Schema v3: indicia that were signed but never sold. A sale can fail after
-- some of its stamps were signed (a sibling stamp could not be funded, the
-- label was taken meanwhile); those indicia were never sent anywhere, but
-- their registers moved, and registers never run backwards. They are kept
-- here and claimed back in the postal report.
CREATE TABLE spoiled (
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
  reason      TEXT    NOT NULL,
  created_at  INTEGER NOT NULL
);
CREATE INDEX spoiled_mpsd ON spoiled (mpsd);
