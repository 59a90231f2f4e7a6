-- Schema v22: the last heartbeat of each kiosk, whichever hub received it.
-- Hubs split heartbeats through the shared subscription, so each reads the
-- others' here before it judges a kiosk silent.
CREATE TABLE kiosk_presence (
  kiosk_id  TEXT   PRIMARY KEY,
  hub       TEXT   NOT NULL,
  last_seen BIGINT NOT NULL,
  telemetry TEXT   NOT NULL
);
CREATE INDEX kiosk_presence_seen ON kiosk_presence (last_seen);
