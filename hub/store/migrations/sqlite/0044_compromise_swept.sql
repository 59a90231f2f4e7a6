-- Schema v44: when a compromised key's stamps were swept: every live stamp
-- it signed dated on or after the day its compromise names is voided,
-- refunded to its buyer and claimed back in the postal report, since
-- verifiers refuse them. NULL while the sweep goes on (hubs may still be
-- signing with the key for a moment after the compromise is recorded).
ALTER TABLE signing_keys ADD COLUMN compromise_swept_at INTEGER;
