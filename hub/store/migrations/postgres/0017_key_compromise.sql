-- Schema v17: when a signing key was compromised. Stamps it signed from
-- that day on are refused by verifiers; it is published as such.
ALTER TABLE signing_keys ADD COLUMN compromised_at BIGINT;
