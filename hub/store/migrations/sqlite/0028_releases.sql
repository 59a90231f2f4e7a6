-- Schema v28: signed kiosk releases and their staged rollouts.
-- A release is its manifest's exact signed bytes, the signature, and each
-- architecture's binary. A rollout offers it stage by stage; each kiosk
-- it offered the release to has the update command that did, whose
-- status is the kiosk's outcome.
CREATE TABLE releases (
  version      TEXT    PRIMARY KEY,
  manifest     BLOB    NOT NULL,
  signature    BLOB    NOT NULL,
  published_by TEXT    NOT NULL,
  published_at INTEGER NOT NULL
);

CREATE TABLE release_files (
  version TEXT    NOT NULL REFERENCES releases (version),
  arch    TEXT    NOT NULL,
  body    BLOB    NOT NULL,
  PRIMARY KEY (version, arch)
);

CREATE TABLE rollouts (
  id              INTEGER PRIMARY KEY AUTOINCREMENT,
  version         TEXT    NOT NULL REFERENCES releases (version),
  stages          TEXT    NOT NULL,
  stage           INTEGER NOT NULL DEFAULT 0,
  max_failure_pct INTEGER NOT NULL,
  soak_s          INTEGER NOT NULL,
  health_s        INTEGER NOT NULL,
  state           TEXT    NOT NULL,
  why             TEXT    NOT NULL DEFAULT '',
  created_by      TEXT    NOT NULL,
  created_at      INTEGER NOT NULL,
  stage_at        INTEGER NOT NULL
);

CREATE TABLE rollout_kiosks (
  rollout_id INTEGER NOT NULL REFERENCES rollouts (id),
  kiosk_id   TEXT    NOT NULL,
  stage      INTEGER NOT NULL,
  command_id TEXT    NOT NULL,
  PRIMARY KEY (rollout_id, kiosk_id)
);

-- An update command carries its release offer, sent again with it.
ALTER TABLE kiosk_commands ADD COLUMN payload TEXT;
