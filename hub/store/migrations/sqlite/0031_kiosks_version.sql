-- Schema v31: a number that every change to kiosks moves, whichever process makes it
-- (a hub, or `hub kiosk retire` from a shell): a hub keeps the kiosks it
-- read until it moves, instead of reading a kiosk row for every sale.
CREATE TABLE kiosks_version (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  v  INTEGER NOT NULL
);
INSERT INTO kiosks_version (id, v) VALUES (1, 0);
CREATE TRIGGER kiosks_version_insert AFTER INSERT ON kiosks BEGIN UPDATE kiosks_version SET v = v + 1; END;
CREATE TRIGGER kiosks_version_update AFTER UPDATE ON kiosks BEGIN UPDATE kiosks_version SET v = v + 1; END;
CREATE TRIGGER kiosks_version_delete AFTER DELETE ON kiosks BEGIN UPDATE kiosks_version SET v = v + 1; END;
