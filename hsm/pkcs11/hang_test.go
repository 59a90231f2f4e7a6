//go:build cgo

package pkcs11

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/frank-postage/frank/hsm"
)

// stallingCtx is the module as a network HSM that stops answering
// mid-call makes it: the next calls of a name hang until the test ends,
// or fail once with an error. It remembers the sessions it was asked to
// close.
type stallingCtx struct {
	cryptoki
	hung    chan string   // a call has started to hang
	release chan struct{} // closed when the test ends

	mu     sync.Mutex
	hang   map[string]int
	fail   map[string]error
	closed []p11.SessionHandle
}

// stalling opens a second Token on the test token, whose calls go through
// a stallingCtx. Its hung calls return when the test ends.
func stalling(t *testing.T) (*Token, *stallingCtx) {
	t.Helper()
	tok, err := Open(token.cfg)
	if err != nil {
		t.Fatal(err)
	}
	st := &stallingCtx{cryptoki: tok.ctx, hung: make(chan string, 8), release: make(chan struct{}),
		hang: map[string]int{}, fail: map[string]error{}}
	tok.ctx = st
	t.Cleanup(func() { tok.Close() })
	t.Cleanup(func() { close(st.release) }) // first: Close may wait for them
	return tok, st
}

func (st *stallingCtx) stall(call string) error {
	st.mu.Lock()
	err := st.fail[call]
	delete(st.fail, call)
	n := st.hang[call]
	if n > 0 {
		st.hang[call] = n - 1
	}
	st.mu.Unlock()
	if n > 0 {
		st.hung <- call
		<-st.release
	}
	return err
}

func (st *stallingCtx) hangNext(call string) {
	st.mu.Lock()
	st.hang[call]++
	st.mu.Unlock()
}

func (st *stallingCtx) failNext(call string, err error) {
	st.mu.Lock()
	st.fail[call] = err
	st.mu.Unlock()
}

func (st *stallingCtx) Login(sh p11.SessionHandle, user uint, pin string) error {
	if err := st.stall("Login"); err != nil {
		return err
	}
	return st.cryptoki.Login(sh, user, pin)
}

func (st *stallingCtx) GetSlotList(present bool) ([]uint, error) {
	if err := st.stall("GetSlotList"); err != nil {
		return nil, err
	}
	return st.cryptoki.GetSlotList(present)
}

func (st *stallingCtx) OpenSession(slot, flags uint) (p11.SessionHandle, error) {
	if err := st.stall("OpenSession"); err != nil {
		return 0, err
	}
	return st.cryptoki.OpenSession(slot, flags)
}

func (st *stallingCtx) CloseSession(sh p11.SessionHandle) error {
	st.mu.Lock()
	st.closed = append(st.closed, sh)
	st.mu.Unlock()
	return st.cryptoki.CloseSession(sh)
}

func (st *stallingCtx) wasClosed(sh p11.SessionHandle) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return slices.Contains(st.closed, sh)
}

// signingKey makes a signing key on the test token, or finds it made by
// an earlier run (-count).
func signingKey(t *testing.T, label string) {
	t.Helper()
	if _, err := token.GenerateSigningKey(label); err != nil && !errors.Is(err, hsm.ErrKeyExists) {
		t.Fatal(err)
	}
}

// meanwhile runs first in the background; once it hangs in the HSM,
// then must return within a deadline: one caller's hung call holds up no
// other caller of the Token.
func meanwhile(t *testing.T, st *stallingCtx, first func(), then func() error) {
	t.Helper()
	firstDone := make(chan struct{})
	go func() { defer close(firstDone); first() }()
	select {
	case call := <-st.hung:
		t.Logf("the first caller hangs in %s", call)
	case <-firstDone:
		t.Fatal("the first caller returned without hanging: the test tests nothing")
	case <-time.After(10 * time.Second):
		t.Fatal("the first caller neither hung nor returned")
	}
	done := make(chan error, 1)
	go func() { done <- then() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("another caller is held up behind the hung HSM call")
	}
}

// A login again that hangs (the HSM stops answering in C_Login after a
// restart) holds up only its own caller: other sessions open, log in,
// sign, and the management calls go on.
func TestHungLoginHoldsUpNoOneElse(t *testing.T) {
	signingKey(t, "hang-login")
	tok, st := stalling(t)
	s, err := tok.Session()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := token.mod.ctx.Logout(s.h); err != nil { // the login goes, as in a restart
		t.Fatal(err)
	}
	st.hangNext("Login")
	meanwhile(t, st, func() { s.Signer("hang-login") }, func() error {
		s2, err := tok.Session()
		if err != nil {
			return err
		}
		defer s2.Close()
		sg, err := s2.Signer("hang-login")
		if err != nil {
			return err
		}
		if err := sign(sg); err != nil {
			return err
		}
		_, err = tok.Public("hang-login")
		return err
	})
}

// Finding the token again (it is not in its slot) when the slot list
// hangs holds up only that caller: management calls and other sessions
// go on.
func TestHungReconnectHoldsUpNoOneElse(t *testing.T) {
	signingKey(t, "hang-reconnect")
	tok, st := stalling(t)
	st.failNext("OpenSession", p11.Error(p11.CKR_SLOT_ID_INVALID))
	st.hangNext("GetSlotList")
	meanwhile(t, st, func() { tok.Session() }, func() error {
		if _, err := tok.Public("hang-reconnect"); err != nil {
			return err
		}
		s, err := tok.Session()
		if err != nil {
			return err
		}
		defer s.Close()
		sg, err := s.Signer("hang-reconnect")
		if err != nil {
			return err
		}
		return sign(sg)
	})
}

// After an HSM restart a worker loading its key does not wait on the
// management session being reconnected by another caller (ops reading a
// public key), which hangs holding the management session's lock.
func TestHungManagementReconnectHoldsUpNoSigner(t *testing.T) {
	signingKey(t, "hang-mgmt")
	tok, st := stalling(t)
	hsmRestart(t)
	st.hangNext("GetSlotList")
	first := func() { tok.Public("hang-mgmt") } // its session is lost: it finds the token again
	meanwhile(t, st, first, func() error {
		s, err := tok.Session()
		if err != nil {
			return err
		}
		defer s.Close()
		sg, err := s.Signer("hang-mgmt")
		if err != nil {
			return err
		}
		return sign(sg)
	})
}

// A session the HSM dropped is not closed again: a restarted HSM numbers
// its sessions afresh, so the old handle may be another goroutine's new
// session by now, and closing it would end that one.
func TestLostHandleNotClosed(t *testing.T) {
	signingKey(t, "stale-handle")
	tok, st := stalling(t)
	s, err := tok.Session()
	if err != nil {
		t.Fatal(err)
	}
	sg, err := s.Signer("stale-handle")
	if err != nil {
		t.Fatal(err)
	}
	tok.mu.Lock()
	mgmt := tok.mgmt
	tok.mu.Unlock()
	hsmRestart(t)
	if err := sign(sg); !errors.Is(err, hsm.ErrSessionLost) {
		t.Fatalf("sign after the restart: %v, want ErrSessionLost", err)
	}
	s.Close()
	if st.wasClosed(s.h) {
		t.Error("the lost session's handle was closed")
	}
	if _, err := tok.Public("stale-handle"); err != nil { // reconnects the management session
		t.Fatal(err)
	}
	if st.wasClosed(mgmt) {
		t.Error("the lost management session's handle was closed")
	}
}

// Once a session has found the token gone and found it again, the
// management session's handle is dead, and a restarted HSM may have given
// its number to a worker's new session: Close logs out and closes no
// such handle, and the next management call opens a session of its own.
func TestStaleManagementHandleNotUsed(t *testing.T) {
	signingKey(t, "stale-mgmt")
	tok, err := Open(token.cfg)
	if err != nil {
		t.Fatal(err)
	}
	st := &stallingCtx{cryptoki: tok.ctx, hung: make(chan string, 8), release: make(chan struct{}),
		hang: map[string]int{}, fail: map[string]error{}}
	defer close(st.release)
	tok.ctx = st
	tok.mu.Lock()
	mgmt := tok.mgmt
	tok.mu.Unlock()
	hsmRestart(t)
	st.failNext("OpenSession", p11.Error(p11.CKR_SLOT_ID_INVALID)) // the token is found again
	s, err := tok.Session()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Signer("stale-mgmt"); err != nil {
		t.Fatal(err)
	}
	tok.Close()
	if st.wasClosed(mgmt) {
		t.Error("Close closed the management session's dead handle")
	}
	s.Close()
}
