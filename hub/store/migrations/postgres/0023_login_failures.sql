-- Schema v23: failed logins and enrollment codes, counted per key (an
-- address, a login, or both) in a window, where every hub of a cluster
-- counts them: a guesser spread over the hubs meets one limit, not one
-- per hub.
CREATE TABLE login_failures (
  name         TEXT    PRIMARY KEY,
  window_start BIGINT NOT NULL,
  n            INTEGER NOT NULL
);
CREATE INDEX login_failures_start ON login_failures (window_start);
