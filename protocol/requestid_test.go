package protocol

import (
	"testing"
	"time"
)

// Request ids are valid tokens of 26 characters, distinct, and sort in the
// order of the times they were made at, across a millisecond and across
// the decades.
func TestRequestIDsSortByTime(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	seen := map[string]bool{}
	var prev string
	for _, at := range []time.Time{t0, t0.Add(time.Millisecond), t0.Add(2 * time.Millisecond), t0.Add(time.Hour), t0.AddDate(40, 0, 0)} {
		a, b := requestIDAt(at), requestIDAt(at)
		for _, id := range []string{a, b} {
			if len(id) != 26 || !ValidRequestID(id) || seen[id] {
				t.Fatalf("id %q: want 26 characters, a valid token, new", id)
			}
			seen[id] = true
			if id <= prev {
				t.Fatalf("%q made at %v sorts before %q, made earlier", id, at, prev)
			}
		}
		if a[:9] != b[:9] { // 45 of the time's 48 bits
			t.Fatalf("ids of one millisecond differ in their time: %q %q", a, b)
		}
		prev = max(a, b)
	}
	if id := NewRequestID(); !ValidRequestID(id) || id <= requestIDAt(t0) {
		t.Fatalf("NewRequestID %q sorts before an id of %v", id, t0)
	}
}
