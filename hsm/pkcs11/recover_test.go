//go:build cgo

package pkcs11

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/frank-postage/frank/hsm"
)

// hsmRestart drops every session of this process on the token, and with
// them the login: what an HSM restart, a network HSM's failover or a token
// taken out and put back does to a running hub.
func hsmRestart(t *testing.T) {
	t.Helper()
	if err := token.mod.ctx.CloseAllSessions(token.currentSlot()); err != nil {
		t.Fatal(err)
	}
}

func sign(sg crypto.Signer) error {
	d := sha256.Sum256([]byte("x"))
	_, err := sg.Sign(rand.Reader, d[:], crypto.SHA256)
	return err
}

// After an HSM restart an old session says it is lost, and the token finds
// itself again, logs in again and serves new sessions and its own calls.
func TestRecoversAfterHSMRestart(t *testing.T) {
	if _, err := token.GenerateSigningKey("restart-sign"); err != nil {
		t.Fatal(err)
	}
	if err := token.GenerateMACKey("restart-mac"); err != nil {
		t.Fatal(err)
	}
	s, err := token.Session()
	if err != nil {
		t.Fatal(err)
	}
	sg, err := s.Signer("restart-sign")
	if err != nil {
		t.Fatal(err)
	}
	if err := sign(sg); err != nil {
		t.Fatal(err)
	}
	hsmRestart(t)
	if err := sign(sg); !errors.Is(err, hsm.ErrSessionLost) {
		t.Fatalf("old session after the restart: %v, want ErrSessionLost", err)
	}
	if _, err := s.MAC("restart-mac", []byte("x")); !errors.Is(err, hsm.ErrSessionLost) {
		t.Fatalf("old session's MAC after the restart: %v, want ErrSessionLost", err)
	}
	s.Close()
	s2, err := token.Session()
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	sg2, err := s2.Signer("restart-sign")
	if err != nil {
		t.Fatalf("new session's signer: %v", err)
	}
	if err := sign(sg2); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.MAC("restart-mac", []byte("x")); err != nil {
		t.Fatalf("new session's MAC: %v", err)
	}
	hsmRestart(t) // the management session goes too
	if _, err := token.Public("restart-sign"); err != nil {
		t.Fatalf("Public after a restart: %v", err)
	}
	hsmRestart(t)
	if err := token.GenerateMACKey("restart-mac-2"); err != nil {
		t.Fatalf("GenerateMACKey after a restart: %v", err)
	}
}

// A session that is not logged in sees no private key: that is
// ErrNotLoggedIn (and session lost), not "no such key", which would send
// ops looking for a key that is there.
func TestNotLoggedInIsNotNoKey(t *testing.T) {
	if _, err := token.GenerateSigningKey("nologin-sign"); err != nil {
		t.Fatal(err)
	}
	s, err := token.Session()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	token.mu.Lock()
	err = token.ctx.Logout(token.mgmt)
	token.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	_, err = findOne(token.ctx, s.h, "nologin-sign", p11.CKO_PRIVATE_KEY, p11.CKK_EC)
	if !errors.Is(err, hsm.ErrNotLoggedIn) || !errors.Is(err, hsm.ErrSessionLost) || errors.Is(err, hsm.ErrNoKey) {
		t.Fatalf("find while logged out: %v, want ErrNotLoggedIn and ErrSessionLost, not ErrNoKey", err)
	}
	// Signer logs in again by itself.
	sg, err := s.Signer("nologin-sign")
	if err != nil {
		t.Fatalf("Signer while logged out: %v", err)
	}
	if err := sign(sg); err != nil {
		t.Fatal(err)
	}
}

// The return values that mean the session is gone are ErrSessionLost;
// others are not.
func TestSessionLostCodes(t *testing.T) {
	for _, c := range lostCodes {
		err := wrap("sign", p11.Error(c))
		if !errors.Is(err, hsm.ErrSessionLost) {
			t.Errorf("%v: not ErrSessionLost", err)
		}
		if !errors.Is(err, p11.Error(c)) {
			t.Errorf("%v: the PKCS#11 code is lost", err)
		}
	}
	if err := wrap("sign", p11.Error(p11.CKR_USER_NOT_LOGGED_IN)); !errors.Is(err, hsm.ErrNotLoggedIn) {
		t.Errorf("%v: not ErrNotLoggedIn", err)
	}
	for _, err := range []error{p11.Error(p11.CKR_KEY_HANDLE_INVALID), p11.Error(p11.CKR_ARGUMENTS_BAD), fmt.Errorf("x")} {
		if errors.Is(wrap("sign", err), hsm.ErrSessionLost) {
			t.Errorf("%v: ErrSessionLost", err)
		}
	}
}

// Two Tokens on one token in one process (an admin command beside the
// server, two hubs in a test): closing one leaves the other logged in.
func TestCloseLeavesTheOtherLoggedIn(t *testing.T) {
	if _, err := token.GenerateSigningKey("close-sign"); err != nil {
		t.Fatal(err)
	}
	if _, err := token.GenerateSigningKey("close-sign-2"); err != nil {
		t.Fatal(err)
	}
	other, err := Open(token.cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := token.Session()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sg, err := s.Signer("close-sign")
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	// Checked on the session's own state: a Signer would log in again.
	if err := loggedIn(token.ctx, s.h); err != nil {
		t.Fatalf("after the other Token closed: %v", err)
	}
	if err := sign(sg); err != nil {
		t.Fatalf("sign after the other Token closed: %v", err)
	}
}
