-- Schema v41: a signing key the HSM made, recorded before the postal
-- authority is asked to certify it. A hub killed between the two, or that
-- lost the authority's answer, left a key the authority certified and the
-- hub knew nothing of; such a key is now published compromised from its
-- making, and never signs.
CREATE TABLE key_registrations (
  key_label      TEXT    PRIMARY KEY,
  public_key_pem TEXT    NOT NULL,
  started_at     BIGINT  NOT NULL
);
