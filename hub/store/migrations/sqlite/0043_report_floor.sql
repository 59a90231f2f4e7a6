-- Schema v43: the report floor. Postal reports take rows by their time, and
-- each hub dates rows by its own clock; a row dated inside a period already
-- reported (a hub behind, a commit that waited past the report's build)
-- was in no report. Every row a report takes by time is now dated no
-- earlier than this: the end of the last period a report was built for.
CREATE TABLE report_floor (
  id    INTEGER PRIMARY KEY CHECK (id = 1),
  floor INTEGER NOT NULL
);
INSERT INTO report_floor (id, floor) VALUES (1, 0);
