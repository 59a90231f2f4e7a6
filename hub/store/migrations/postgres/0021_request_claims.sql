-- Schema v21: a request belongs to one hub at a time. A hub claims a
-- purchase (or a label's refund) here before it touches any money, and
-- deletes the claim once the answer is recorded and the money settled.
-- Another hub that gets the same request waits for the claim to go, then
-- replays the answer; a claim whose hub's lease has lapsed is taken over.
CREATE TABLE request_claims (
  scope      TEXT   NOT NULL, -- a kiosk's (or web customer's) id, or "refund-label"
  name       TEXT   NOT NULL, -- the request_id, or the label
  hub        TEXT   NOT NULL,
  claimed_at BIGINT NOT NULL,
  PRIMARY KEY (scope, name)
);
CREATE INDEX request_claims_age ON request_claims (claimed_at);
