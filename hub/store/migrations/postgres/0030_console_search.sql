-- Schema v30: the console finds a sale by request id alone, by meter
-- number, by the card's approval code (the gateway's authorization id) or
-- by the customer account that paid, and reads refunds, label loads and
-- alerts by time for exports and shift reports. Without these each would
-- read its whole table.
CREATE INDEX sales_request ON sales (request_id);
CREATE INDEX indicia_mpsd ON indicia (mpsd, id);
CREATE INDEX payments_gateway_ref ON payments (gateway_ref);
CREATE INDEX payments_account ON payments (account_id);
CREATE INDEX remedies_at ON remedies (at);
CREATE INDEX sheets_issued ON sheets (issued_at);
CREATE INDEX sheets_assigned ON sheets (assigned_at);
CREATE INDEX alerts_created ON alerts (created_at);
