-- Schema v48: a number that every change to the kiosks' central config
-- (kiosk_settings, store_staff) moves, whichever process makes it. Hubs
-- noticed changes made elsewhere (the command line, another hub) by their
-- latest time, which each writer takes from its own clock: a change dated
-- before the latest (a clock a second behind, or an earlier time committed
-- later) was never pushed to the kiosks, a revoked staff member's session
-- among it.
CREATE TABLE config_version (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  v  INTEGER NOT NULL
);
INSERT INTO config_version (id, v) VALUES (1, 0);
CREATE TRIGGER config_version_settings_insert AFTER INSERT ON kiosk_settings BEGIN UPDATE config_version SET v = v + 1; END;
CREATE TRIGGER config_version_settings_update AFTER UPDATE ON kiosk_settings BEGIN UPDATE config_version SET v = v + 1; END;
CREATE TRIGGER config_version_settings_delete AFTER DELETE ON kiosk_settings BEGIN UPDATE config_version SET v = v + 1; END;
CREATE TRIGGER config_version_staff_insert AFTER INSERT ON store_staff BEGIN UPDATE config_version SET v = v + 1; END;
CREATE TRIGGER config_version_staff_update AFTER UPDATE ON store_staff BEGIN UPDATE config_version SET v = v + 1; END;
CREATE TRIGGER config_version_staff_delete AFTER DELETE ON store_staff BEGIN UPDATE config_version SET v = v + 1; END;
