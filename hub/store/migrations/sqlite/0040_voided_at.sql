-- Schema v40: when each indicium stopped being live. A postal report
-- claims a void back in the period it was voided in; by the stamp's sale
-- time, as before, a stamp refunded after its period was reported was
-- claimed in no report. Spoiled indicia were never live: their sale time
-- stays their claim's.
ALTER TABLE indicia ADD COLUMN voided_at INTEGER;
-- The voids already claimed: each one in the body of a report sent, in
-- any state (one whose answer was lost may be the one the authority
-- keeps). Bodies are JSON text in a BLOB, which json_each would read as
-- JSONB.
CREATE TABLE claimed_voids (mpsd INTEGER NOT NULL, ar INTEGER NOT NULL);
INSERT INTO claimed_voids (mpsd, ar)
  SELECT json_extract(v.value, '$.mpsd'), json_extract(v.value, '$.ar')
  FROM reports r, json_each(CAST(r.body AS TEXT), '$.voided') v
  WHERE v.type = 'object';
CREATE INDEX claimed_voids_key ON claimed_voids (mpsd, ar);
-- The void time is not known. A void claimed already keeps its sale time,
-- so the reports sent are built again as they were and nothing is claimed
-- twice; so does one in a period no report reached yet, where the old rule
-- would have claimed it. One in a period reported without it (voided after
-- the report was built) was never claimed: it takes the end of the last
-- period reported, and the next report claims it.
UPDATE indicia SET voided_at = CASE
    WHEN created_at >= (SELECT COALESCE(MAX(period_to), 0) FROM reports) THEN created_at
    WHEN EXISTS (SELECT 1 FROM claimed_voids c WHERE c.mpsd = indicia.mpsd AND c.ar = indicia.ar) THEN created_at
    ELSE (SELECT MAX(period_to) FROM reports)
  END
  WHERE state = 'voided';
DROP TABLE claimed_voids;
-- A report reads the period's voids; voids are few.
CREATE INDEX indicia_voided_at ON indicia (voided_at) WHERE voided_at IS NOT NULL;
