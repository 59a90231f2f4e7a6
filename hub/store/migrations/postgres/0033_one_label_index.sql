-- Schema v33: one index on indicia's labels instead of two. Each stamp
-- wrote two random index pages for one key, indicia_label (every row) and
-- indicia_live_label (unique among live rows; partial on state, so
-- printing a stamp rewrote its entry as well). live is 1 for a live
-- indicium and NULL for a voided one, and NULLs never collide in a unique
-- index: (label, live) is unique among the live rows alone, and its
-- prefix finds a label in any state. Voiding sets live to NULL with the
-- state; printing changes no indexed column, so it can update the row in
-- place (a HOT update) where the row's page has room. (Keeping room on
-- every page for that, fillfactor 90, was measured and not kept: a tenth
-- of a page holds a few of its rows' updates, and the WAL did not shrink.)
ALTER TABLE indicia ADD COLUMN live INTEGER DEFAULT 1 CHECK (live = 1);
UPDATE indicia SET live = NULL WHERE state = 'voided';
ALTER TABLE indicia ADD CONSTRAINT indicia_live_state CHECK ((state = 'voided') = (live IS NULL));
CREATE UNIQUE INDEX indicia_label_live ON indicia (label, live);
DROP INDEX indicia_live_label;
DROP INDEX indicia_label;
DROP INDEX indicia_voided;
CREATE INDEX indicia_voided ON indicia (id) WHERE live IS NULL;
