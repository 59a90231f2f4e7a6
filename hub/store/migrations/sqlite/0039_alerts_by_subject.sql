-- Schema v39: a raised alert first looks for the newest of its kind and
-- subject, to reopen one the hub cleared minutes ago rather than add one
-- per flip of a flapping condition; this index makes that a lookup.
CREATE INDEX alerts_kind_subject ON alerts (kind, subject, id);
