package payments

import (
	"strings"
	"testing"
)

// attemptOf reads back exactly the keys newAttempt makes, and no key
// whose fields have another shape: misread, a live hold passes for
// another purchase's and is voided.
func TestAttemptOfStrict(t *testing.T) {
	for _, k := range []Key{{"K1", "r1"}, {"fund-7", "req-1"}, {"web-12", "0123456789abcdef0123456789abcdef"}} {
		for _, hub := range []string{"hub-a", "host-a/1/aa"} {
			pay, err := newAttempt(k, Source{}, 780, hub)
			if err != nil {
				t.Fatal(err)
			}
			key, h, ok := attemptOf(pay.attempt)
			if !ok || key != k || h != hub {
				t.Errorf("%s: %v %q %v; want %v %q", pay.attempt, key, h, ok, k, hub)
			}
		}
	}
	if key, hub, ok := attemptOf("K1/r1/0123456789ab"); !ok || key != (Key{"K1", "r1"}) || hub != "" {
		t.Errorf("a key made before hubs were named: %v %q %v", key, hub, ok)
	}
	for _, bad := range []string{
		"fund-7/x/y/0123456789ab/host-a/1/aa", // request x/y
		"K1/r1/nonce/hub",
		"K1/r1/0123456789AB/hub",
		"K1/r1/0123456789a/hub",
		"K1/r1/0123456789ab/",
		"K1//0123456789ab/hub",
		"/r1/0123456789ab/hub",
		"K 1/r1/0123456789ab/hub",
		"K1/r1",
		"",
		"K1/" + strings.Repeat("r", 65) + "/0123456789ab/hub",
	} {
		if key, hub, ok := attemptOf(bad); ok {
			t.Errorf("%q read as %v of hub %q", bad, key, hub)
		}
	}
	for _, k := range []Key{{"fund-7", "x/y"}, {"K/1", "r1"}, {"K1", ""}, {"", "r1"}} {
		if _, err := newAttempt(k, Source{}, 780, "hub-a"); err == nil {
			t.Errorf("an attempt for %v was made", k)
		}
	}
}
