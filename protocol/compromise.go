package protocol

import "time"

// CompromiseDate is the first date of mailing from which a key compromised
// at instant at signs no postage. A stamp carries its hub's local date, so
// a hub west of UTC signing after the compromise dates its stamp before
// the UTC date of the compromise; the date the instant has at UTC-12, the
// earliest clock on Earth, is on or before every hub's date at or after
// it, wherever the hub is. Stamps dated that day signed before the
// compromise are void too: the rule errs towards the postal service.
func CompromiseDate(at time.Time) Date {
	return DateOf(at.UTC().Add(-12 * time.Hour))
}
