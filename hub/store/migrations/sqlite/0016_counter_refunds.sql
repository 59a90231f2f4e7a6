-- Schema v16: who refunded a stamp at the counter, and why.
ALTER TABLE remedies ADD COLUMN by_operator TEXT;
ALTER TABLE remedies ADD COLUMN reason TEXT;
-- The void list is read by label.
CREATE INDEX IF NOT EXISTS indicia_voided ON indicia (state) WHERE state = 'voided';
