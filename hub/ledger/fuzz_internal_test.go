package ledger

import (
	"testing"

	"github.com/frank-postage/frank/protocol"
)

// A void list cursor comes back from anyone who fetches /voided?after=.
// What parseVoidCursor takes is exactly what voidCursor.String writes (so
// no two spellings name one place in the list, and no id is negative);
// what it refuses is invalid_request with no cursor. Every cursor the hub
// gives reads back as itself.
func FuzzParseVoidCursor(f *testing.F) {
	for _, s := range []string{"", "i0", "s0", "i42", "s9223372036854775807", "i9223372036854775808", "i-1", "i+1", "i01",
		"x42", "i", "s", "I42", "i 42", "i42\n", "\xff42"} {
		f.Add(s, false, int64(7))
	}
	f.Add("", true, int64(0))
	f.Fuzz(func(t *testing.T, s string, spoiled bool, id int64) {
		c, err := parseVoidCursor(s)
		if err != nil {
			if protocol.AsError(err).Code != protocol.CodeInvalidRequest || c != (voidCursor{}) {
				t.Fatalf("%q refused with %+v, %v", s, c, err)
			}
		} else if c.id < 0 || s == "" && c != (voidCursor{}) || s != "" && c.String() != s {
			t.Fatalf("%q taken as %+v (%q)", s, c, c.String())
		}
		if id < 0 {
			return
		}
		given := voidCursor{spoiled: spoiled, id: id}
		if back, err := parseVoidCursor(given.String()); err != nil || back != given {
			t.Fatalf("%+v -> %q -> %+v, %v", given, given.String(), back, err)
		}
	})
}
