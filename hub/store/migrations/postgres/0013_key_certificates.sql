-- Schema v13: the postal authority's certificate for each indicium key (an
-- X.509 certificate it signed over the key, its serial, the vendor and the
-- validity dates), so a verifier trusts a published key without the hub.
-- Keys registered before it get theirs when the hub next starts.
ALTER TABLE signing_keys ADD COLUMN certificate_pem TEXT NOT NULL DEFAULT '';
