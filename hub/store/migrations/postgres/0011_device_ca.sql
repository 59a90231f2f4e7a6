-- Schema v11: the device CA that issues kiosks (and hubs) their
-- certificates. Its key sits in the HSM under key_label; only its
-- certificate is kept here, for every hub on the database. crl_number
-- counts the revocation lists it has signed.
CREATE TABLE device_ca (
  id         INTEGER PRIMARY KEY CHECK (id = 1),
  key_label  TEXT    NOT NULL,
  cert_pem   TEXT    NOT NULL,
  crl_number BIGINT  NOT NULL DEFAULT 0,
  created_at BIGINT  NOT NULL
);

-- Every certificate the CA issued: to a kiosk (subject its id), or to a
-- hub as a broker client or a server (subject the hub's name). A revoked
-- one is on the CRL until it expires.
CREATE TABLE device_certs (
  serial     TEXT    PRIMARY KEY,
  subject    TEXT    NOT NULL,
  kind       TEXT    NOT NULL,
  not_before BIGINT  NOT NULL,
  not_after  BIGINT  NOT NULL,
  revoked_at BIGINT,
  reason     TEXT
);
CREATE INDEX device_certs_subject ON device_certs (subject);
