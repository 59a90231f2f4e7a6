-- Schema v26: ops' remote commands to kiosks, and the kiosk lock.
-- A command is kept with who gave it and the kiosk's answer (diagnostics
-- among them); the hub sends it again until the kiosk answers. A locked
-- kiosk (suspected stolen) is refused every sale and stock load by the
-- hub itself, whatever its software does.
ALTER TABLE kiosks ADD COLUMN locked_at INTEGER;
ALTER TABLE kiosks ADD COLUMN locked_by TEXT;

CREATE TABLE kiosk_commands (
  id        TEXT    PRIMARY KEY,
  kiosk_id  TEXT    NOT NULL REFERENCES kiosks (kiosk_id),
  action    TEXT    NOT NULL,
  message   TEXT    NOT NULL DEFAULT '',
  issued_by TEXT    NOT NULL,
  issued_at INTEGER NOT NULL,
  sent_at   INTEGER,
  done_at   INTEGER,
  status    TEXT    NOT NULL DEFAULT 'pending',
  result    TEXT
);
CREATE INDEX kiosk_commands_kiosk ON kiosk_commands (kiosk_id, issued_at);
CREATE INDEX kiosk_commands_open ON kiosk_commands (status, sent_at);
