-- Schema v32: a payment's row is written three times in a sale: inserted
-- (authorizing, no approval code yet), then authorized, then captured. A
-- full index takes an entry at each of those writes, even for rows without
-- its key (a card payment has no account, an attempt no approval code);
-- partial ones skip them. (PostgreSQL also leaves room on its pages here,
-- for updates in place; SQLite rewrites the page either way.)
DROP INDEX payments_gateway_ref;
CREATE INDEX payments_gateway_ref ON payments (gateway_ref) WHERE gateway_ref IS NOT NULL;
DROP INDEX payments_account;
CREATE INDEX payments_account ON payments (account_id) WHERE account_id IS NOT NULL;
