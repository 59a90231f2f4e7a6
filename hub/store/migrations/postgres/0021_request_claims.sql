-- Schema v21: a request belongs to one hub at a time. A hub claims a
-- purchase (or a label's refund) here before it touches any money. Another
-- hub that gets the same request waits until the answer is recorded, then
-- replays it; a claim whose hub's lease has lapsed is taken over. A claim
-- given up without an answer is deleted; the others are swept after
-- ten minutes, far past any request's deadline.
CREATE TABLE request_claims (
  scope      TEXT   NOT NULL, -- a kiosk's (or web customer's) id, or "refund-label"
  name       TEXT   NOT NULL, -- the request_id, or the label
  hub        TEXT   NOT NULL,
  claimed_at BIGINT NOT NULL,
  PRIMARY KEY (scope, name)
);
CREATE INDEX request_claims_age ON request_claims (claimed_at);
