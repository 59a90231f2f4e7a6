package hsm_test

import (
	"crypto"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/frank-postage/frank/hsm"
)

// fakeSession's MAC works until the HSM "restarts" (gen moves on), then
// says its session is lost, as a PKCS#11 session does.
type fakeSession struct {
	id     int
	hsmGen *int
	gen    int
	closed bool
}

func (s *fakeSession) Signer(string) (crypto.Signer, error) { return nil, hsm.ErrNoKey }
func (s *fakeSession) Close() error                         { s.closed = true; return nil }
func (s *fakeSession) MAC(label string, data []byte) ([]byte, error) {
	if s.gen != *s.hsmGen {
		return nil, fmt.Errorf("fake: mac: %w", hsm.ErrSessionLost)
	}
	return []byte(fmt.Sprint(s.id)), nil
}

// The ledger's one long-lived session comes back by itself after an HSM
// restart: the call that found it lost is made again on a new session.
func TestReopeningSessionAfterRestart(t *testing.T) {
	hsmGen := 0
	var opened []*fakeSession
	r, err := hsm.Reopening(func() (hsm.Session, error) {
		s := &fakeSession{id: len(opened) + 1, hsmGen: &hsmGen, gen: hsmGen}
		opened = append(opened, s)
		return s, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := r.MAC("k", nil); err != nil || string(out) != "1" {
		t.Fatalf("MAC = %q, %v", out, err)
	}
	hsmGen++ // the HSM restarts
	if out, err := r.MAC("k", nil); err != nil || string(out) != "2" {
		t.Fatalf("MAC after the restart = %q, %v; want it from a second session", out, err)
	}
	if !opened[0].closed {
		t.Error("the lost session was not closed")
	}
	// Other errors are the caller's: no new session for them.
	if _, err := r.Signer("k"); !errors.Is(err, hsm.ErrNoKey) || len(opened) != 2 {
		t.Fatalf("Signer = %v with %d sessions opened", err, len(opened))
	}
	r.Close()
	if !opened[1].closed {
		t.Error("Close left the session open")
	}
}

// A reopen the HSM leaves hanging does not hold up Close (the hub
// shutting down).
func TestHungReopenDoesNotHoldUpClose(t *testing.T) {
	hsmGen := 0
	hang := make(chan struct{})
	opening := make(chan struct{}, 1)
	first := true
	var late *fakeSession
	r, err := hsm.Reopening(func() (hsm.Session, error) {
		if !first {
			opening <- struct{}{}
			<-hang
			late = &fakeSession{id: 2, hsmGen: &hsmGen, gen: hsmGen}
			return late, nil
		}
		first = false
		return &fakeSession{hsmGen: &hsmGen, gen: hsmGen}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	hsmGen++ // the HSM restarts, and hangs when asked for a new session
	macs := make(chan error, 1)
	go func() {
		_, err := r.MAC("k", nil)
		macs <- err
	}()
	<-opening
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waits for the hung reopen")
	}
	// The open that outlived Close: its session is closed, not kept, and
	// the call fails.
	close(hang)
	if err := <-macs; err == nil {
		t.Error("a MAC after Close worked")
	}
	if !late.closed {
		t.Error("the session a hung reopen opened after Close was left open")
	}
	if _, err := r.MAC("k", nil); err == nil {
		t.Error("a MAC after Close worked")
	}
}
