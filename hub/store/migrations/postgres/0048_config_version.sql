-- Schema v48: a number that every change to the kiosks' central config
-- (kiosk_settings, store_staff) moves, whichever process makes it. Hubs
-- noticed changes made elsewhere (the command line, another hub) by their
-- latest time, which each writer takes from its own clock: a change dated
-- before the latest (a clock a second behind, or an earlier time committed
-- later) was never pushed to the kiosks, a revoked staff member's session
-- among it.
CREATE TABLE config_version (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  v  BIGINT  NOT NULL
);
INSERT INTO config_version (id, v) VALUES (1, 0);
CREATE FUNCTION config_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE config_version SET v = v + 1;
  RETURN NULL;
END
$$;
CREATE TRIGGER config_version_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON kiosk_settings
  FOR EACH STATEMENT EXECUTE FUNCTION config_version_bump();
CREATE TRIGGER config_version_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON store_staff
  FOR EACH STATEMENT EXECUTE FUNCTION config_version_bump();
