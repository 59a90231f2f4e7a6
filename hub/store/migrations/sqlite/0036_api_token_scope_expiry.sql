-- Schema v36: operator API tokens expire and are read-only unless made
-- with --write, so a token leaked from a script or a CI log neither works
-- forever nor with the operator's full rights. A row written without
-- them is expired and read-only: it fails closed.
ALTER TABLE api_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'read' CHECK (scope IN ('read', 'write'));
ALTER TABLE api_tokens ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
-- Tokens from before could write, and scripts may rely on it: they keep
-- that, but now expire 90 days after the upgrade (or after they were
-- made, if a clock ahead made them later), so their holders have time to
-- make new ones rather than finding automation broken on upgrade day.
UPDATE api_tokens SET scope = 'write',
  expires_at = MAX(created_at, CAST(strftime('%s', 'now') AS INTEGER) * 1000000) + 7776000000000; -- 90 days, in microseconds
