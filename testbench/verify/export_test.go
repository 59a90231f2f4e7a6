package verify

// DecodeBoth exposes decodeBoth to the tests.
var DecodeBoth = decodeBoth
