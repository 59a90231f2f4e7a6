-- Schema v42: the time zone a store sells in (an IANA name), NULL for the
-- hub's own. A stamp carries the date of mailing, and a rate table takes
-- over at midnight where the mail is posted, not where the hub runs.
ALTER TABLE stores ADD COLUMN time_zone TEXT;
