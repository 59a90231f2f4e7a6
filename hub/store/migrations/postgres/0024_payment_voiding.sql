-- Schema v24: an attempt whose hold is being given back is 'voiding'
-- before the gateway is asked to void it. The sale's commit needs the
-- attempt still 'authorizing', so a hub whose lease lapsed mid-sale cannot
-- record a sale on a hold another hub is voiding.
ALTER TABLE payments DROP CONSTRAINT payments_state_check;
ALTER TABLE payments ADD CONSTRAINT payments_state_check
  CHECK (state IN ('authorizing', 'authorized', 'captured', 'voiding', 'voided'));
