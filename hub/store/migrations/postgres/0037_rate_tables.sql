-- Schema v37: the rate tables every hub of a cluster prices with. Each hub
-- adds the tables of its own rates directory and reads the others', so a
-- table dropped on one hub reaches all of them and no two hubs price one
-- version differently. A version is never changed once added.
CREATE TABLE rate_tables (
  version   TEXT PRIMARY KEY,
  body      TEXT NOT NULL,
  added_by  TEXT NOT NULL,
  added_at  BIGINT NOT NULL
);
