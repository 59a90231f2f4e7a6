-- Schema v5: a label is used once any indicium, even a voided one, was made
-- for it; the sale's precheck and the stock view look labels up by that,
-- which the partial unique index (live indicia only) cannot serve.
CREATE INDEX indicia_label ON indicia (label);
