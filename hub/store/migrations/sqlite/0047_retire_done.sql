-- Schema v47: when a kiosk's retirement was carried through: its
-- certificates revoked, its sheets and unreported stamps voided. A hub that
-- stopped between retiring a kiosk and those steps left them undone; the
-- leader finishes every retired kiosk without it (hub.finishRetirements).
-- NULL for kiosks retired before v47 too: finishing again is harmless.
ALTER TABLE kiosks ADD COLUMN retire_done_at INTEGER;
