-- Schema v40: when each indicium stopped being live. A postal report
-- claims a void back in the period it was voided in; by the stamp's sale
-- time, as before, a stamp refunded after its period was reported was
-- claimed in no report. Spoiled indicia were never live: their sale time
-- stays their claim's.
ALTER TABLE indicia ADD COLUMN voided_at BIGINT;
-- The voids already claimed: each one in the body of a report sent, in
-- any state (one whose answer was lost may be the one the authority
-- keeps). Each body is parsed once; json, not jsonb, takes any escape Go
-- writes.
CREATE TABLE claimed_voids (mpsd BIGINT NOT NULL, ar BIGINT NOT NULL);
WITH lists AS MATERIALIZED (SELECT convert_from(body, 'UTF8')::json -> 'voided' AS list FROM reports)
INSERT INTO claimed_voids (mpsd, ar)
  SELECT (v ->> 'mpsd')::BIGINT, (v ->> 'ar')::BIGINT
  FROM lists, json_array_elements(CASE WHEN json_typeof(lists.list) = 'array' THEN lists.list ELSE '[]'::json END) v
  WHERE json_typeof(v) = 'object';
CREATE INDEX claimed_voids_key ON claimed_voids (mpsd, ar);
-- The void time is not known. A void claimed already keeps its sale time,
-- so the reports sent are built again as they were and nothing is claimed
-- twice; so does one in a period no report reached yet, where the old rule
-- would have claimed it. One in a period reported without it (voided after
-- the report was built) was never claimed: it takes the end of the last
-- period reported, and the next report claims it.
UPDATE indicia i SET voided_at = CASE
    WHEN i.created_at >= s.until THEN i.created_at
    WHEN EXISTS (SELECT 1 FROM claimed_voids c WHERE c.mpsd = i.mpsd AND c.ar = i.ar) THEN i.created_at
    ELSE s.until
  END
  FROM (SELECT COALESCE(MAX(period_to), 0) AS until FROM reports) s
  WHERE i.state = 'voided';
DROP TABLE claimed_voids;
ALTER TABLE indicia ADD CONSTRAINT indicia_voided_at_state CHECK ((state = 'voided') = (voided_at IS NOT NULL));
-- A report reads the period's voids; voids are few.
CREATE INDEX indicia_voided_at ON indicia (voided_at) WHERE voided_at IS NOT NULL;
