-- Schema v38: the device CA's latest signed revocation list, so that every
-- hub on the database serves the same list and one is signed only when the
-- revoked certificates change or the list nears its next update; an
-- anonymous GET used to sign one each. From now on crl_number is the
-- number of crl_der (NULL until the first list after the upgrade).
ALTER TABLE device_ca ADD COLUMN crl_der BLOB;
-- The revoked certificates are a few among all those ever issued, and the
-- CRL and every broker read them often.
CREATE INDEX device_certs_revoked ON device_certs (not_after) WHERE revoked_at IS NOT NULL;
