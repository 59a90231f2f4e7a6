package kiosk_test

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/kiosk"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/wait"
)

// The store's staff from the hub's central config replace the kiosk's own
// PIN and badges; a member the hub drops is refused at once, and their
// open staff session ends.
func TestCentralStaffAndSettings(t *testing.T) {
	fh := &fakeHub{answer: vectorAnswer}
	k, _ := setupWith(t, fh, func(c *kiosk.Config) { c.StaffPINHash = pinHash(t, "2468") })
	srv := httptest.NewServer(k.Handler())
	defer srv.Close()
	login := func(body string) (int, string) { t.Helper(); return staffLogin(t, srv.URL, body) }
	live := func(token string) bool { t.Helper(); return staffLive(t, srv.URL, token) }
	badge := sha256.Sum256([]byte("STAFF-BOB-7"))
	alice := protocol.StaffCredential{Name: "alice", PINHash: pinHash(t, "1357")}
	bob := protocol.StaffCredential{Name: "bob", BadgeSHA256: hex.EncodeToString(badge[:])}
	// push sends a config and waits until the kiosk has taken it (a
	// login that only it allows works).
	push := func(c protocol.KioskConfig, until func() bool) {
		t.Helper()
		c.KioskID, c.HeartbeatS, c.Rates = "k1", 30, prototest.Rates
		fh.link.push(protocol.TopicConfig, c)
		wait.For(t, 5*time.Second, "the kiosk to take the config", until)
	}

	if st, _ := login(`{"pin":"2468"}`); st != http.StatusOK {
		t.Fatalf("the kiosk's own PIN before central staff: %d", st)
	}
	push(protocol.KioskConfig{StaffManaged: true, Staff: []protocol.StaffCredential{alice, bob},
		Settings: protocol.KioskSettings{IdleTimeoutS: 45, Language: "es", RemedyWindowS: 120}},
		func() bool { st, _ := login(`{"badge":"STAFF-BOB-7"}`); return st == http.StatusOK })
	if st, _ := login(`{"pin":"2468"}`); st != http.StatusUnauthorized {
		t.Fatalf("the kiosk's own PIN once the hub manages staff: %d", st)
	}
	st, aliceToken := login(`{"pin":"1357"}`)
	if st != http.StatusOK || !live(aliceToken) {
		t.Fatalf("alice's PIN: %d", st)
	}
	if s := k.Status(); s.IdleTimeoutS != 45 || s.Language != "es" {
		t.Fatalf("settings on the status: %+v", s)
	}

	// Alice leaves: revoked at the hub, refused here, her session over.
	push(protocol.KioskConfig{StaffManaged: true, Staff: []protocol.StaffCredential{bob}},
		func() bool { return !live(aliceToken) })
	if st, _ := login(`{"pin":"1357"}`); st != http.StatusUnauthorized {
		t.Fatalf("alice's PIN after her revocation: %d", st)
	}
	// The last one leaves too: nobody, not even the kiosk's own PIN.
	push(protocol.KioskConfig{StaffManaged: true}, func() bool { st, _ := login(`{"badge":"STAFF-BOB-7"}`); return st == http.StatusUnauthorized })
	if st, _ := login(`{"pin":"2468"}`); st != http.StatusUnauthorized {
		t.Fatalf("the kiosk's own PIN with every central member revoked: %d", st)
	}
}
