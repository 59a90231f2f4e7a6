-- Schema v12: retired kiosks, and the device events postal reports carry.
-- A retired kiosk keeps its row (its sales and stamps stay in history and
-- reports) but may no longer log in or sell; lost says it was lost or
-- stolen, which the next postal report declares.
ALTER TABLE kiosks ADD COLUMN retired_at INTEGER;
ALTER TABLE kiosks ADD COLUMN retired_reason TEXT;

CREATE TABLE device_events (
  id      INTEGER PRIMARY KEY AUTOINCREMENT,
  kind    TEXT    NOT NULL,
  subject TEXT    NOT NULL,
  detail  TEXT    NOT NULL,
  at      INTEGER NOT NULL
);
CREATE INDEX device_events_at ON device_events (at);
