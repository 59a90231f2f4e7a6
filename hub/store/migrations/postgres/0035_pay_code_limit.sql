-- Schema v35: a pay code pays at most what its customer set when making
-- it, so a kiosk handed the code (a stolen one) cannot spend the whole
-- balance with it. Codes made before have none (NULL).
ALTER TABLE pay_codes ADD COLUMN max_mills BIGINT;
