package hub_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/settings"
	websession "github.com/frank-postage/frank/hub/web/session"
	"github.com/frank-postage/frank/protocol"
)

// staffLogin sends a staff login from the stand-in kiosk and returns the
// hub's answer.
func (k *kioskClient) staffLogin(t *testing.T, answers <-chan []byte, id, body string) protocol.StaffLoginResult {
	t.Helper()
	k.c.Publish(protocol.KioskTopic(k.id, protocol.TopicStaff), 1, false, []byte(body))
	for {
		select {
		case b := <-answers:
			r, err := protocol.DecodeStaffLoginResult(b)
			if err != nil {
				t.Fatalf("answer %s: %v", b, err)
			}
			if r.RequestID == id {
				return *r
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("no answer to staff login %s", id)
		}
	}
}

// A kiosk whose store's staff the hub manages is sent their names only,
// never a PIN or badge hash, and asks the hub for each login. The hub
// checks PINs and badges of the kiosk's own store's active staff, and
// counts wrong ones where every hub sees them: StaffTries in StaffWindow,
// then none is checked until the window ends; StaffDayTries in a day
// raise staff_guessing. A locked kiosk's logins are refused.
func TestStaffLoginCheckedAtTheHub(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	cc := e.h.CentralConfig()
	for _, m := range [][3]string{{"alice", "1357", ""}, {"bob", "", "STAFF-BOB-7"}, {"carol", "8642", ""}} {
		if err := cc.AddStaff(ctx, "store-a", m[0], m[1], m[2], "ann"); err != nil {
			t.Fatal(err)
		}
	}
	if err := cc.RevokeStaff(ctx, "store-a", "carol", "ann"); err != nil {
		t.Fatal(err)
	}
	k := e.kiosk("kiosk-1")
	raw := make(chan []byte, 4)
	k.c.Subscribe(protocol.KioskTopic("kiosk-1", protocol.TopicConfig), 1, func(_ mqtt.Client, m mqtt.Message) { raw <- m.Payload() }).Wait()
	for names := []string(nil); !slices.Equal(names, []string{"alice", "bob"}); {
		var b []byte
		select {
		case b = <-raw:
		case <-time.After(15 * time.Second):
			t.Fatalf("no config naming alice and bob; the last named %v", names)
		}
		c, err := protocol.DecodeKioskConfig(b)
		if err != nil || !c.StaffManaged {
			t.Fatalf("config %s: %v", b, err)
		}
		if strings.Contains(string(b), "$2a$") || strings.Contains(string(b), settings.BadgeSum("STAFF-BOB-7")) {
			t.Fatalf("the config carries a hash: %s", b)
		}
		names = c.StaffNames
	}
	answers := make(chan []byte, 16)
	tok := k.c.Subscribe(protocol.KioskTopic("kiosk-1", protocol.TopicStaffResult), 1, func(_ mqtt.Client, m mqtt.Message) { answers <- m.Payload() })
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	n := 0
	login := func(cred string) protocol.StaffLoginResult {
		t.Helper()
		n++
		id := fmt.Sprintf("t-%d", n)
		return k.staffLogin(t, answers, id, `{"request_id":"`+id+`","kiosk_id":"kiosk-1",`+cred+`}`)
	}
	if r := login(`"pin":"1357"`); r.Status != protocol.ResultOK || r.Name != "alice" {
		t.Fatalf("alice's PIN: %+v", r)
	}
	if r := login(`"badge":"STAFF-BOB-7"`); r.Status != protocol.ResultOK || r.Name != "bob" {
		t.Fatalf("bob's badge: %+v", r)
	}
	if r := login(`"pin":"8642"`); r.Status != protocol.ResultRejected || r.Error.Code != protocol.CodeUnauthorized || r.RetryAfterS != 0 {
		t.Fatalf("revoked carol's PIN: %+v", r)
	}
	// Another kiosk's id in the body.
	if r := k.staffLogin(t, answers, "t-mis", `{"request_id":"t-mis","kiosk_id":"kiosk-2","pin":"1357"}`); r.Error.Code != protocol.CodeKioskMismatch {
		t.Fatalf("a login naming another kiosk: %+v", r)
	}
	// Carol's is one wrong one: four more make five.
	for range 4 {
		if r := login(`"pin":"0000"`); r.Error == nil || r.Error.Code != protocol.CodeUnauthorized || r.RetryAfterS != 0 {
			t.Fatalf("a wrong PIN: %+v", r)
		}
	}
	r := login(`"pin":"1357"`)
	if r.Status != protocol.ResultRejected || r.RetryAfterS < 60 || r.RetryAfterS > int(hub.StaffWindow/time.Second) {
		t.Fatalf("the right PIN after %d wrong ones: %+v", hub.StaffTries, r)
	}
	// Another hub on the same database refuses it too.
	other := websession.NewLimiter(hub.StaffTries, hub.StaffWindow)
	other.DB, other.Now = e.openDB(), e.clock.Now
	if ok, _ := other.Allow("staff:kiosk:kiosk-1"); ok {
		t.Fatal("another hub would check this kiosk's next login")
	}
	// The window ends: checked again, right and wrong, until a day's
	// worth of wrong ones.
	for wrong := hub.StaffTries; wrong < hub.StaffDayTries; {
		e.clock.Set(e.clock.Now().Add(hub.StaffWindow + time.Second))
		if r := login(`"pin":"1357"`); r.Status != protocol.ResultOK {
			t.Fatalf("alice's PIN after the window, %d wrong today: %+v", wrong, r)
		}
		for i := 0; i < hub.StaffTries && wrong < hub.StaffDayTries; i++ {
			if r := login(`"pin":"0000"`); r.Error.Code != protocol.CodeUnauthorized || r.RetryAfterS != 0 {
				t.Fatalf("wrong PIN %d: %+v", wrong+1, r)
			}
			wrong++
		}
	}
	e.clock.Set(e.clock.Now().Add(hub.StaffWindow + time.Second))
	if r := login(`"badge":"STAFF-BOB-7"`); r.Status != protocol.ResultRejected || r.RetryAfterS <= int(hub.StaffWindow/time.Second) {
		t.Fatalf("bob's badge after %d wrong logins in a day: %+v", hub.StaffDayTries, r)
	}
	open, err := e.h.Alerts().List(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(open, func(a alerts.Alert) bool { return a.Kind == alerts.StaffGuessing && a.Subject == "kiosk/kiosk-1" }) {
		t.Fatalf("no staff_guessing alert: %+v", open)
	}
	// A day later it is checked again; a locked kiosk's is refused.
	e.clock.Set(e.clock.Now().Add(25 * time.Hour))
	if r := login(`"pin":"1357"`); r.Status != protocol.ResultOK {
		t.Fatalf("alice's PIN the next day: %+v", r)
	}
	if err := e.h.Fleet().SetLocked(ctx, "kiosk-1", "ann", true); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for r := login(`"pin":"1357"`); r.Error == nil || r.Error.Code != protocol.CodeKioskLocked; r = login(`"pin":"1357"`) {
		if time.Now().After(deadline) {
			t.Fatalf("a locked kiosk's staff login: %+v", r)
		}
	}
}

// Wrong staff logins of one kiosk delivered to two hubs at once (the
// shared subscription splits a burst) meet one limit: a kiosk's logins
// are checked one at a time in the cluster, so each check reads every
// earlier one's count. Before, each hub let StaffTries through at once:
// an audit's 20 guesses at two hubs had 10 checked.
func TestStaffLimitAcrossHubs(t *testing.T) {
	t.Parallel()
	dsn := peersDB(t)
	e := newEnvWith(t, func(c *hub.Config) { c.DB = dsn; c.PasswordCost = bcrypt.DefaultCost }) // checks as long as in service
	ctx := context.Background()
	if err := e.h.CentralConfig().AddStaff(ctx, "store-a", "alice", "1357", "", "ann"); err != nil {
		t.Fatal(err)
	}
	desks := []interface {
		Answer(context.Context, string, []byte) ([]byte, *protocol.Error)
	}{hub.StaffDeskOn(e.h, e.openDB(), "hub-a"), hub.StaffDeskOn(e.h, e.openDB(), "hub-b")}
	var mu sync.Mutex
	checked := 0
	guess := func(i int) protocol.StaffLoginResult {
		id := fmt.Sprintf("t-%d", i)
		b, _ := desks[i%2].Answer(ctx, "kiosk-1", []byte(`{"request_id":"`+id+`","kiosk_id":"kiosk-1","pin":"0000"}`))
		r, err := protocol.DecodeStaffLoginResult(b)
		if err != nil {
			t.Errorf("answer %s: %v", b, err)
			return protocol.StaffLoginResult{}
		}
		if r.Error != nil && r.RetryAfterS == 0 {
			mu.Lock()
			checked++
			mu.Unlock()
		}
		return *r
	}
	// Bursts of 20 at both hubs until the limit refuses them: then none is
	// checked, some are refused for the window and the rest while another
	// is looked at.
	for round := 0; ; round++ {
		before := checked
		var wg sync.WaitGroup
		var limited atomic.Int32
		start := make(chan struct{})
		for i := range 20 {
			wg.Go(func() {
				<-start
				if guess(round*20+i).RetryAfterS >= 60 {
					limited.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		if checked > hub.StaffTries {
			t.Fatalf("two hubs checked %d wrong PINs of one kiosk in bursts, limit %d", checked, hub.StaffTries)
		}
		if checked == before && limited.Load() > 0 {
			break
		}
		if round == 2*hub.StaffTries {
			t.Fatalf("after %d bursts, %d checked and the limit not met", round+1, checked)
		}
	}
	if checked != hub.StaffTries {
		t.Fatalf("%d wrong PINs checked before the limit, want %d", checked, hub.StaffTries)
	}
}

// The day's count of a kiosk's wrong staff logins is kept in the database
// for its day: the sweep of the login limits' counts, every few seconds,
// deletes only the 15-minute ones. Before, it deleted the day's after 15
// minutes, and two hubs, each holding its own count, checked 40 wrong
// PINs of one kiosk in three hours, day limit 20 (a review's reproducer).
func TestStaffDayLimitKeptBySweep(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	if err := e.h.CentralConfig().AddStaff(ctx, "store-a", "alice", "1357", "", "ann"); err != nil {
		t.Fatal(err)
	}
	db := e.openDB()
	desks := []interface {
		Answer(context.Context, string, []byte) ([]byte, *protocol.Error)
	}{hub.StaffDeskOn(e.h, db, "hub-a"), hub.StaffDeskOn(e.h, db, "hub-b")}
	checked, n := 0, 0
	for w := 0; w < 12; w++ {
		for range hub.StaffTries {
			n++
			id := fmt.Sprintf("t-%d", n)
			b, _ := desks[w%2].Answer(ctx, "kiosk-1", []byte(`{"request_id":"`+id+`","kiosk_id":"kiosk-1","pin":"0000"}`))
			r, err := protocol.DecodeStaffLoginResult(b)
			if err != nil {
				t.Fatal(err)
			}
			if r.Error != nil && r.Error.Code == protocol.CodeUnauthorized && r.RetryAfterS == 0 {
				checked++
			}
		}
		e.clock.Set(e.clock.Now().Add(hub.StaffWindow + time.Second))
		e.h.Round() // sweeps the counts, as every hub does every few seconds
	}
	if checked != hub.StaffDayTries {
		t.Fatalf("two hubs checked %d wrong PINs of one kiosk in three hours, day limit %d", checked, hub.StaffDayTries)
	}
	// A day on, the day's count is swept and logins are checked again.
	e.clock.Set(e.clock.Now().Add(24 * time.Hour))
	e.h.Round()
	b, _ := desks[0].Answer(ctx, "kiosk-1", []byte(`{"request_id":"t-next-day","kiosk_id":"kiosk-1","pin":"1357"}`))
	if r, err := protocol.DecodeStaffLoginResult(b); err != nil || r.Status != protocol.ResultOK {
		t.Fatalf("the next day: %s %v", b, err)
	}
	var rows int
	db.QueryRowContext(ctx, `SELECT COUNT(*) FROM login_failures WHERE name LIKE 'staff-day:%'`).Scan(&rows)
	if rows != 0 {
		t.Fatalf("%d day counts left a day on", rows)
	}
}

// Right logins count too: a PIN costs a bcrypt comparison per member of
// the store, so a kiosk gets StaffChecks checks in StaffWindow, right or
// wrong, and a thief who knows one PIN cannot keep a core busy with it.
func TestStaffChecksBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	if err := e.h.CentralConfig().AddStaff(ctx, "store-a", "alice", "1357", "", "ann"); err != nil {
		t.Fatal(err)
	}
	desk := hub.StaffDeskOn(e.h, e.openDB(), "hub-a")
	login := func(i int) protocol.StaffLoginResult {
		t.Helper()
		b, _ := desk.Answer(ctx, "kiosk-1", []byte(fmt.Sprintf(`{"request_id":"t-%d","kiosk_id":"kiosk-1","pin":"1357"}`, i)))
		r, err := protocol.DecodeStaffLoginResult(b)
		if err != nil {
			t.Fatalf("answer %s: %v", b, err)
		}
		return *r
	}
	for i := range hub.StaffChecks {
		if r := login(i); r.Status != protocol.ResultOK {
			t.Fatalf("login %d: %+v", i+1, r)
		}
	}
	if r := login(hub.StaffChecks); r.Status != protocol.ResultRejected || r.RetryAfterS < 60 {
		t.Fatalf("login %d in %s: %+v", hub.StaffChecks+1, hub.StaffWindow, r)
	}
	e.clock.Set(e.clock.Now().Add(hub.StaffWindow + time.Second))
	if r := login(hub.StaffChecks + 1); r.Status != protocol.ResultOK {
		t.Fatalf("after the window: %+v", r)
	}
}
