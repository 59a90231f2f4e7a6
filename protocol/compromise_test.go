package protocol_test

import (
	"testing"
	"time"

	"github.com/frank-postage/frank/protocol"
)

// A compromise voids stamps from the date the instant has at UTC-12, so
// no hub's local date after the compromise falls before it.
func TestCompromiseDate(t *testing.T) {
	for _, tc := range []struct {
		at   string
		want protocol.Date
	}{
		{"2026-12-07T04:30:00Z", 20261206},      // a UTC-5 hub still dates 2026-12-06
		{"2026-12-07T11:59:59Z", 20261206},      // still the 6th at UTC-12
		{"2026-12-07T12:00:00Z", 20261207},      // midnight at UTC-12
		{"2026-12-06T23:30:00-05:00", 20261206}, // the instant counts, not its zone
		{"2027-01-01T00:00:00Z", 20261231},
	} {
		at, err := time.Parse(time.RFC3339, tc.at)
		if err != nil {
			t.Fatal(err)
		}
		if got := protocol.CompromiseDate(at); got != tc.want {
			t.Errorf("compromised %s: void from %s, want %s", tc.at, got, tc.want)
		}
	}
	// Every clock on Earth, UTC-12 to UTC+14, dates every instant at or
	// after the compromise on or after its day.
	at := time.Date(2026, 12, 7, 4, 30, 0, 0, time.UTC)
	for off := -12 * 60; off <= 14*60; off += 15 {
		zone := time.FixedZone("", off*60)
		for _, later := range []time.Duration{0, time.Minute, 19 * time.Hour, 30 * time.Hour} {
			if d := protocol.DateOf(at.Add(later).In(zone)); d < protocol.CompromiseDate(at) {
				t.Errorf("a hub at UTC%+dm signing %v after the compromise dates %s, before %s", off, later, d, protocol.CompromiseDate(at))
			}
		}
	}
}
