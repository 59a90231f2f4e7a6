package kiosk_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/kiosk"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/wait"
)

// Once the hub manages the store's staff, it checks every PIN and badge:
// the kiosk's own file's stop counting, the config carries names only,
// and a member the hub drops is refused at once, their open session
// ended. A hub that does not answer opens nothing.
func TestCentralStaffAndSettings(t *testing.T) {
	fh := &fakeHub{answer: vectorAnswer, staff: func(r protocol.StaffLogin) protocol.StaffLoginResult {
		switch {
		case r.PIN == "1357":
			return protocol.StaffLoginResult{Status: protocol.ResultOK, Name: "alice"}
		case r.Badge == "STAFF-BOB-7":
			return protocol.StaffLoginResult{Status: protocol.ResultOK, Name: "bob"}
		case r.PIN == "0000":
			return protocol.StaffLoginResult{Status: protocol.ResultRejected, RetryAfterS: 600,
				Error: protocol.Errorf(protocol.CodeUnauthorized, "too many wrong staff logins")}
		}
		return protocol.StaffLoginResult{Status: protocol.ResultRejected, Error: protocol.Errorf(protocol.CodeUnauthorized, "wrong PIN or badge")}
	}}
	k, _ := setupWith(t, fh, func(c *kiosk.Config) { c.StaffPINHash = pinHash(t, "2468") })
	srv := httptest.NewServer(k.Handler())
	defer srv.Close()
	login := func(body string) (int, string) { t.Helper(); return staffLogin(t, srv.URL, body) }
	live := func(token string) bool { t.Helper(); return staffLive(t, srv.URL, token) }
	push := func(c protocol.KioskConfig, until func() bool) { t.Helper(); pushConfig(t, fh, c, until) }

	if st, _ := login(`{"pin":"2468"}`); st != http.StatusOK || fh.staffAsked.Load() != 0 {
		t.Fatalf("the kiosk's own PIN before central staff: %d, %d asked at the hub", st, fh.staffAsked.Load())
	}
	push(protocol.KioskConfig{StaffManaged: true, StaffNames: []string{"alice", "bob"},
		Settings: protocol.KioskSettings{IdleTimeoutS: 45, Language: "es", RemedyWindowS: 120}},
		func() bool { return k.Status().Language == "es" })
	if st, _ := login(`{"pin":"2468"}`); st != http.StatusUnauthorized {
		t.Fatalf("the kiosk's own PIN once the hub manages staff: %d", st)
	}
	st, aliceToken := login(`{"pin":"1357"}`)
	if st != http.StatusOK || !live(aliceToken) {
		t.Fatalf("alice's PIN: %d", st)
	}
	if st, _ := login(`{"badge":"STAFF-BOB-7"}`); st != http.StatusOK {
		t.Fatalf("bob's badge: %d", st)
	}
	if s := k.Status(); s.IdleTimeoutS != 45 || s.Language != "es" {
		t.Fatalf("settings on the status: %+v", s)
	}
	// The hub's limit is the kiosk's answer: 429 with its Retry-After.
	resp, err := http.Post(srv.URL+"/api/v1/staff/login", "application/json", strings.NewReader(`{"pin":"0000"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "601" {
		t.Fatalf("a login the hub's limit refused: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	// Alice leaves: dropped at the hub, her session over at once.
	push(protocol.KioskConfig{StaffManaged: true, StaffNames: []string{"bob"}},
		func() bool { return !live(aliceToken) })
	// The last one leaves too: nobody, not even the kiosk's own PIN.
	push(protocol.KioskConfig{StaffManaged: true}, func() bool { return k.Status().Language == "" })
	if st, _ := login(`{"pin":"2468"}`); st != http.StatusUnauthorized {
		t.Fatalf("the kiosk's own PIN with every central member revoked: %d", st)
	}

	// No hub, no login: 503, and the kiosk's own PIN still does not count.
	fh.link.up.Store(false)
	if st, _ := login(`{"pin":"1357"}`); st != http.StatusServiceUnavailable {
		t.Fatalf("a staff login with the hub unreachable: %d", st)
	}
}

// The config from the hub carries no PIN or badge hash for the kiosk to
// keep, and a config from a hub before this release, which did, is taken
// for its names alone.
func TestCentralConfigCarriesNoHashes(t *testing.T) {
	rates, err := json.Marshal(prototest.Rates)
	if err != nil {
		t.Fatal(err)
	}
	old := `{"kiosk_id":"k1","heartbeat_s":30,"rates":` + string(rates) +
		`,"staff_managed":true,"staff":[{"name":"alice","pin_hash":"$2a$04$abcdefghijklmnopqrstuu5J1T0k5hQ6V2z1v4b7J5aZr8Tq0m6yS"}]}`
	c, err := protocol.DecodeKioskConfig([]byte(old))
	if err != nil || !c.StaffManaged || len(c.StaffNames) != 0 {
		t.Fatalf("an old hub's config: %+v %v", c, err)
	}
	b, _ := json.Marshal(protocol.KioskConfig{KioskID: "k1", HeartbeatS: 30, Rates: prototest.Rates, StaffManaged: true, StaffNames: []string{"alice"}})
	if strings.Contains(string(b), "hash") || strings.Contains(string(b), "badge") {
		t.Fatalf("config %s", b)
	}
}

// A kiosk moved to another store ends every staff session, even of a name
// the new store lists too; and a config naming no store (the hub does not
// know the kiosk) never puts the kiosk's own PIN back once the hub managed
// its staff.
func TestMovedKioskEndsStaffSessions(t *testing.T) {
	fh := &fakeHub{answer: vectorAnswer, staff: func(r protocol.StaffLogin) protocol.StaffLoginResult {
		if r.PIN == "1357" {
			return protocol.StaffLoginResult{Status: protocol.ResultOK, Name: "alice"}
		}
		return protocol.StaffLoginResult{Status: protocol.ResultRejected, Error: protocol.Errorf(protocol.CodeUnauthorized, "wrong PIN or badge")}
	}}
	k, _ := setupWith(t, fh, func(c *kiosk.Config) { c.StaffPINHash = pinHash(t, "2468") })
	srv := httptest.NewServer(k.Handler())
	defer srv.Close()
	login := func(body string) (int, string) { t.Helper(); return staffLogin(t, srv.URL, body) }
	live := func(token string) bool { t.Helper(); return staffLive(t, srv.URL, token) }
	push := func(c protocol.KioskConfig, until func() bool) { t.Helper(); pushConfig(t, fh, c, until) }
	push(protocol.KioskConfig{Store: "store-a", StaffManaged: true, StaffNames: []string{"alice"},
		Settings: protocol.KioskSettings{Language: "es"}}, func() bool { return k.Status().Language == "es" })
	st, token := login(`{"pin":"1357"}`)
	if st != http.StatusOK || !live(token) {
		t.Fatalf("alice's PIN: %d", st)
	}
	push(protocol.KioskConfig{Store: "store-b", StaffManaged: true, StaffNames: []string{"alice"}},
		func() bool { return !live(token) })
	push(protocol.KioskConfig{Settings: protocol.KioskSettings{IdleTimeoutS: 50}}, func() bool { return k.Status().IdleTimeoutS == 50 })
	if st, _ := login(`{"pin":"2468"}`); st != http.StatusUnauthorized {
		t.Fatalf("the kiosk's own PIN after a config naming no store: %d", st)
	}
}

// pushConfig sends kiosk k1 a config from fh and waits until the kiosk
// has taken it.
func pushConfig(t *testing.T, fh *fakeHub, c protocol.KioskConfig, until func() bool) {
	t.Helper()
	c.KioskID, c.HeartbeatS, c.Rates = "k1", 30, prototest.Rates
	fh.link.push(protocol.TopicConfig, c)
	wait.For(t, 5*time.Second, "the kiosk to take the config", until)
}
