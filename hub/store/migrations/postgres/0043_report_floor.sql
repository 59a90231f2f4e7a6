-- Schema v43: the report floor. Postal reports take rows by their time, and
-- each hub dates rows by its own clock; a row dated inside a period already
-- reported (a hub behind, a commit that waited past the report's build)
-- was in no report. Every row a report takes by time is now dated no
-- earlier than this: the end of the last period a report was built for.
-- Writers read it in the transaction that writes (holding ACCESS SHARE on
-- the table until they end); a report's build takes ACCESS EXCLUSIVE to
-- raise it, so it waits for every writer that read the old floor.
CREATE TABLE report_floor (
  id    INTEGER PRIMARY KEY CHECK (id = 1),
  floor BIGINT NOT NULL
);
INSERT INTO report_floor (id, floor) VALUES (1, 0);
