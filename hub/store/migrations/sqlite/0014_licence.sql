-- Schema v14: the postal licence the vendor holds, stored with the GPSD
-- (patent claims 1, 16: every indicium is issued under that one licence).
-- The hub fills it from its configuration at start and refuses another.
ALTER TABLE psd ADD COLUMN licence TEXT;
