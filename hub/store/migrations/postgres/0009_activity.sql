-- Schema v9: the console's activity charts, one row per hub and minute of
-- purchase answers, so they outlive a restart and show every hub sharing
-- this database. hist holds the latency histogram's counts, comma-separated.
CREATE TABLE activity (
  hub      TEXT    NOT NULL,
  minute   BIGINT NOT NULL,
  ok       BIGINT NOT NULL,
  rejected BIGINT NOT NULL,
  sum_us   BIGINT NOT NULL,
  max_us   BIGINT NOT NULL,
  hist     TEXT    NOT NULL,
  PRIMARY KEY (hub, minute)
);
CREATE INDEX activity_minute ON activity (minute);
