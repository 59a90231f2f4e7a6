package ledger

// FundingHeadroom is fundingHeadroom, for the property test's model of
// when Reserve buys.
const FundingHeadroom = fundingHeadroom
