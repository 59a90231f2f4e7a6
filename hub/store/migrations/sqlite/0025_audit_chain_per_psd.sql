-- Schema v25: one audit chain per PSD. Every commit of every hub locked the
-- single audit_head row; now a chain's head sits in its PSD's row, which the
-- commit locks anyway. The chain so far becomes chain 0 and grows no more
-- (audit_head keeps its head); each PSD's chain opens with the registers
-- chain 0 left it with. n is an entry's place in its chain.
ALTER TABLE audit ADD COLUMN chain INTEGER NOT NULL DEFAULT 0;
ALTER TABLE audit ADD COLUMN n INTEGER NOT NULL DEFAULT 0;
UPDATE audit SET n = seq;
CREATE UNIQUE INDEX audit_chain ON audit (chain, n);
-- A PSD's entries are its chain now: (psd, seq) was one more index page
-- for every commit to write.
DROP INDEX audit_psd;
ALTER TABLE psd ADD COLUMN audit_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE psd ADD COLUMN audit_hash BLOB;
