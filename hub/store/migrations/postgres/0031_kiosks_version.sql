-- Schema v31: a number that every change to kiosks moves, whichever process makes it
-- (a hub, or `hub kiosk retire` from a shell): a hub keeps the kiosks it
-- read until it moves, instead of reading a kiosk row for every sale.
CREATE TABLE kiosks_version (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  v  BIGINT  NOT NULL
);
INSERT INTO kiosks_version (id, v) VALUES (1, 0);
CREATE FUNCTION kiosks_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE kiosks_version SET v = v + 1;
  RETURN NULL;
END
$$;
CREATE TRIGGER kiosks_version_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON kiosks
  FOR EACH STATEMENT EXECUTE FUNCTION kiosks_version_bump();
