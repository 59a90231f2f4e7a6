-- Schema v34: when a key's compromise was declared, apart from the day its
-- stamps are void from (compromised_at, often earlier). The postal report
-- of the period the declaration falls in tells the authority, even when
-- the void day falls in a period already reported.
ALTER TABLE signing_keys ADD COLUMN compromise_noted_at INTEGER;
UPDATE signing_keys SET compromise_noted_at = compromised_at WHERE compromised_at IS NOT NULL;
