-- Schema v18: generations of the control-code (MAC) key. Generation 1 is
-- the hub's configured key; a rotation adds the next, reseals every PSD
-- row under it and records it in the audit chain. A control code made
-- under generation 2 or later names it, so rows sealed by a hub that has
-- not yet followed still check.
CREATE TABLE control_keys (
  gen        INTEGER PRIMARY KEY,
  label      TEXT    NOT NULL,
  created_at INTEGER NOT NULL
);
