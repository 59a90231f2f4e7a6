-- Schema v15: leases on jobs that exactly one hub of those sharing the
-- database runs at a time (the scheduled postal reports).
CREATE TABLE job_leases (
  name   TEXT PRIMARY KEY,
  holder TEXT NOT NULL,
  until  BIGINT NOT NULL
);
