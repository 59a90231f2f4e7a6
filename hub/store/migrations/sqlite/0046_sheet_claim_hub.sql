-- Schema v46: the hub whose web sale claimed a sheet, while no sale on it
-- has committed. A claim whose hub died before its sale was made or
-- refused is dropped when the dead hubs are settled (stock.SettleClaims),
-- not left its customer's. NULL for a sheet ops gave, or one sold on.
ALTER TABLE sheets ADD COLUMN claim_hub TEXT;
-- Settlement looks for the claims of dead hubs; they are few.
CREATE INDEX sheets_claim_hub ON sheets (claim_hub) WHERE claim_hub IS NOT NULL;
