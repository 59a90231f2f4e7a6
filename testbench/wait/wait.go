// Package wait is how Frank's tests wait on another goroutine or process:
// they poll a condition until it holds or a deadline passes, and never
// sleep for a guessed time. A failure says what was awaited and for how
// long.
package wait

import (
	"fmt"
	"testing"
	"time"
)

// poll is the longest pause between two looks; the first looks come
// sooner, so a condition that is nearly there costs little.
const poll = 50 * time.Millisecond

// For polls cond until it returns true. If within passes first, it fails
// the test with "waited <within> for <what>".
func For(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	Until(t, within, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

var errNotYet = fmt.Errorf("not yet")

// Until polls cond until it returns nil. If within passes first, it fails
// the test with what was awaited and cond's last error.
func Until(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	if err := Poll(within, cond); err != nil {
		if err == errNotYet {
			t.Fatalf("waited %v for %s", within, what)
		}
		t.Fatalf("waited %v for %s: %v", within, what, err)
	}
}

// Poll is Until for code that is not a test's goroutine (t.Fatal must not
// be called from others): it returns cond's last error once within has
// passed, or nil as soon as cond holds.
func Poll(within time.Duration, cond func() error) error {
	deadline := time.Now().Add(within)
	pause := time.Millisecond
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		err := cond()
		if err == nil || !time.Now().Before(deadline) {
			return err
		}
		timer.Reset(min(pause, time.Until(deadline)))
		<-timer.C
		pause = min(2*pause, poll)
	}
}

// Never checks that cond stays false for the whole of d: the one wait
// that has nothing to wait on, used where a test shows something does not
// happen (a lock not carried out mid-print). It fails the test, naming
// what happened, as soon as cond holds.
func Never(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	err := Poll(d, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
	if err == nil {
		t.Fatalf("%s, within %v", what, d)
	}
}
