package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/commands"
	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/metrics"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/pgtest"
	"github.com/frank-postage/frank/testbench/wait"
)

// On PostgreSQL a heartbeat another hub received reaches this hub's
// presence (and so its console) as a notification, at once: the hub does
// not poll the table. It reads the table only when it starts listening.
func TestHeartbeatsOfOtherHubsArrive(t *testing.T) {
	dsn := peersDB(t)
	e := newEnvWith(t, func(c *hub.Config) { c.DB = dsn })
	ctx := context.Background()
	other, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	peer := fleet.New(other)
	seen := func(sales int64) func() bool {
		return func() bool {
			for _, s := range e.h.Presence().List() {
				if s.ID == "kiosk-2" && s.Telemetry != nil && s.Telemetry.Sales == sales {
					return true
				}
			}
			return false
		}
	}
	send := func(sales int64) {
		t.Helper()
		tele := &protocol.Telemetry{KioskID: "kiosk-2", At: time.Now(), Firmware: "1", Paper: "ok", Printer: "ok", Scale: "ok", Sales: sales, InService: true}
		if err := peer.SaveHeartbeat(ctx, "hub-other", time.Now(), tele); err != nil {
			t.Fatal(err)
		}
	}
	// The first may arrive either way: the hub reads the table once when
	// it starts listening.
	send(1)
	wait.For(t, 10*time.Second, "the first heartbeat of kiosk-2 seen", seen(1))
	wait.For(t, 10*time.Second, "the hub to hear the other hubs and have read the table", e.h.HearsPeers)
	// Later ones only as notifications. From here the table keeps a
	// heartbeat of kiosk-2 dated far ahead, which no later one replaces
	// (a heartbeat never overwrites a newer one): a hub that read the
	// table again would see that one, and then ignore every later one as
	// older. Only the notifications carry them.
	far := time.Now().AddDate(100, 0, 0).UnixMicro()
	if _, err := other.ExecContext(ctx, other.Rebind(`UPDATE kiosk_presence SET last_seen = ? WHERE kiosk_id = ?`), far, "kiosk-2"); err != nil {
		t.Fatal(err)
	}
	for i := int64(2); i < 12; i++ {
		send(i)
		wait.For(t, 10*time.Second, "a later heartbeat of kiosk-2 seen, told by a notification", seen(i))
	}
	// The table held none of them: this test's premise.
	hbs, err := peer.Heartbeats(ctx, time.Time{}, "")
	if err != nil || len(hbs) != 1 || hbs[0].Telemetry.Sales != 1 || hbs[0].At.UnixMicro() != far {
		t.Fatalf("the table holds %+v, %v; want only the first heartbeat, dated ahead", hbs, err)
	}
}

// On PostgreSQL a kiosk password replaced on another hub closes the
// kiosk's session here at once, told by a notification: this hub's broker
// would not recheck for an hour.
func TestReplacedPasswordToldToOtherHubs(t *testing.T) {
	t.Parallel()
	dsn := peersDB(t)
	e := newEnvWith(t, func(c *hub.Config) { c.DB, c.BrokerRecheck = dsn, time.Hour })
	lost := make(chan struct{})
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + e.h.BrokerAddr).SetClientID("kiosk-1").SetUsername("kiosk-1").
		SetPassword(e.pw["kiosk-1"]).SetAutoReconnect(false).SetConnectionLostHandler(func(mqtt.Client, error) { close(lost) })
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(50)
	other, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	reg := fleet.New(other)
	reg.Passwords = true
	if _, err := reg.Add(context.Background(), "kiosk-1", "store-a"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the session opened with the password replaced on another hub is still open")
	}
}

// On PostgreSQL every hub tells the others its minute of answers in
// progress, and charts theirs beside its own: any hub's console shows the
// whole cluster's live activity, not only what it answered itself.
func TestActivityOfOtherHubsArrives(t *testing.T) {
	t.Parallel()
	dsn := peersDB(t)
	e := newEnvWith(t, func(c *hub.Config) { c.DB, c.ActivityEvery = dsn, 50*time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	other, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	// What this hub answers reaches the others.
	told := make(chan string, 64)
	listening := make(chan bool, 4)
	go other.Listen(ctx, store.Listener{
		Handlers:  map[string]func(string){store.ActivityChannel: func(p string) { told <- p }},
		Listening: func(on bool) { listening <- on },
		Log:       slog.New(slog.DiscardHandler),
	})
	if !<-listening {
		t.Fatal("not listening")
	}
	e.h.Metrics().Answered(metrics.ChannelKiosk, 12*time.Millisecond, "")
	deadline := time.After(10 * time.Second)
	for heard := false; !heard; {
		select {
		case p := <-told:
			_, ms, err := metrics.DecodeActivityNote(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range ms {
				heard = heard || m.OK == 1
			}
		case <-deadline:
			t.Fatal("the hub's answer was never told to the other hubs")
		}
	}

	// What another hub tells shows in this hub's charts. Its minutes are
	// on the hub's clock: on the wall clock, a minute turning over in the
	// test would put them after this hub's last minute.
	a := metrics.New(metrics.Sources{Now: e.clock.Now})
	for range 7 {
		a.Answered(metrics.ChannelKiosk, 20*time.Millisecond, "")
	}
	note, err := metrics.EncodeActivityNote("hub-other", a.Activity().Live())
	if err != nil {
		t.Fatal(err)
	}
	// Told again until heard, as the other hub would each period: this
	// hub's own listener may still be connecting (a note is not queued).
	wait.For(t, 10*time.Second, "the other hub's 7 answers in this hub's chart", func() bool {
		pts := e.h.Metrics().Activity().Series(2*time.Minute, time.Minute)
		n := 0
		for _, p := range pts {
			n += p.OK
		}
		if n != 8 {
			if err := other.Notify(ctx, store.ActivityChannel, note); err != nil {
				t.Error(err)
			}
		}
		return n == 8
	})
}

// peersDB is a fresh PostgreSQL database for hubs that share it.
func peersDB(t *testing.T) string {
	t.Helper()
	return pgtest.NewTestDatabase(t)
}

// On PostgreSQL a command given on another hub, or by `hub kiosk` on the
// database, needs no broker of its own: a lock refuses the kiosk's sales on
// this hub at once, told by a notification; the leading hub's round hands
// the command to the kiosk; its answer, recorded here, is what the other
// hub's console shows; and an unlock there lets the kiosk sell here again.
func TestCommandsFromAnotherHub(t *testing.T) {
	t.Parallel()
	dsn := peersDB(t)
	e := newEnvWith(t, func(c *hub.Config) { c.DB = dsn })
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	cmds := k.commandsOf(t)
	if r := decode(t, k.ask(purchase("peer-1", "kiosk-1", "1966-F8CF-01", nil))); r.Status != protocol.ResultOK {
		t.Fatalf("sale: %+v", r.Error)
	}
	other, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	book := commands.New(other, fleet.New(other), nil) // no sender: its broker is not the kiosk's
	c, err := book.Issue(ctx, "kiosk-1", protocol.ActionLock, "suspected stolen", "rita-ops")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	wait.Until(t, 10*time.Second, "kiosk-1 refused as locked on this hub", func() error {
		n++
		r := decode(t, k.ask(purchase(fmt.Sprintf("peer-locked-%d", n), "kiosk-1", "1966-F8CF-02", nil)))
		if r.Error == nil || r.Error.Code != protocol.CodeKioskLocked {
			return fmt.Errorf("answered %s %+v", r.Status, r.Error)
		}
		return nil
	})
	e.h.Round()
	got := nextCommand(t, cmds)
	if got.CommandID != c.CommandID || got.Action != protocol.ActionLock || got.IssuedBy != "rita-ops" {
		t.Fatalf("command %+v", got)
	}
	res, _ := json.Marshal(protocol.CommandResult{CommandID: got.CommandID, KioskID: "kiosk-1", Status: protocol.ResultOK, At: time.Now().UTC()})
	k.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicCommandResult), 1, false, res)
	wait.Until(t, 10*time.Second, "the answer seen on the other hub", func() error {
		got, err := book.Get(ctx, c.CommandID)
		if err == nil && (got.Status != commands.Done || got.IssuedBy != "rita-ops" || got.DoneAt == nil) {
			err = fmt.Errorf("%s by %s", got.Status, got.IssuedBy)
		}
		return err
	})
	if _, err := book.Issue(ctx, "kiosk-1", protocol.ActionUnlock, "", "rita-ops"); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "kiosk-1 sells again on this hub", func() error {
		n++
		r := decode(t, k.ask(purchase(fmt.Sprintf("peer-unlocked-%d", n), "kiosk-1", "1966-F8CF-02", nil)))
		if r.Status != protocol.ResultOK {
			return fmt.Errorf("answered %s %+v", r.Status, r.Error)
		}
		return nil
	})
	e.check()
}

// The leader files the reports; a hub that does not lead sells by them
// too. It read the GPSD's reporting date only at start (and after reports
// of its own), so once InspectionStop had passed since it started it
// refused every sale with inspection_overdue, though the leader's reports
// were accepted.
func TestFollowerSellsByTheLeadersReports(t *testing.T) {
	t.Parallel()
	dsn := peersDB(t)
	e := newEnvWith(t, func(c *hub.Config) { c.DB = dsn })
	ctx := context.Background()
	e2 := &env{t: t, pa: e.pa, cards: e.cards, clock: e.clock, pw: e.pw, cfg: e.cfg}
	e2.start()
	k2 := e2.kiosk("kiosk-2")
	if r := decode(t, k2.ask(purchase("insp-0", "kiosk-2", "2222-0001-01", nil))); r.Status != protocol.ResultOK {
		t.Fatalf("first sale on the follower: %+v", r.Error)
	}
	// 100 days on the leader files the report; 30 days after it the last
	// report is 30 days old, and the follower started 130 days ago.
	e.clock.Set(e.clock.Now().Add(100 * 24 * time.Hour))
	from, err := e.h.Ledger().ReportedUntil(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := e.h.Ledger().BuildReport(ctx, from, e.clock.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.h.Ledger().SubmitReport(ctx, rep, e.h.Postal()); err != nil {
		t.Fatal(err)
	}
	e.clock.Set(e.clock.Now().Add(30 * 24 * time.Hour))
	for _, h := range []*hub.Hub{e.h, e2.h} {
		h.Round()
		h.Tick(ctx)
		h.Pool().RenewNow(ctx)
	}
	k1 := e.kiosk("kiosk-1")
	for _, c := range []struct {
		k            *kioskClient
		id, kiosk, l string
	}{{k1, "insp-1", "kiosk-1", "1966-F8CF-01"}, {k2, "insp-2", "kiosk-2", "2222-0001-02"}} {
		if r := decode(t, c.k.ask(purchase(c.id, c.kiosk, c.l, nil))); r.Status != protocol.ResultOK {
			t.Errorf("%s on %s: %+v", c.id, c.kiosk, r.Error)
		}
	}
}

// Hubs date rows and judge each other's leases by their own clocks, so a
// hub's clock is held to the database's: ops are told when it is more than
// a couple of seconds off, once, and again when it agrees.
func TestHubClockHeldToTheDatabase(t *testing.T) {
	t.Parallel()
	dsn := peersDB(t)
	e := newEnvWith(t, func(c *hub.Config) { c.DB = dsn })
	ctx := context.Background()
	count := func(openOnly bool) int {
		as, err := e.h.Alerts().List(ctx, openOnly)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, a := range as {
			if a.Kind == alerts.ClockSkew && strings.HasPrefix(a.Subject, "hub/") {
				n++
			}
		}
		return n
	}
	skewAlerts := func() (open, all int) { return count(true), count(false) }
	hub.CheckClock(e.h, time.Now)
	if open, all := skewAlerts(); all != 0 {
		t.Fatalf("a clock that agrees raised %d alerts (%d open)", all, open)
	}
	ahead := func() time.Time { return time.Now().Add(10 * time.Second) }
	hub.CheckClock(e.h, ahead)
	hub.CheckClock(e.h, ahead)
	if open, all := skewAlerts(); open != 1 || all != 1 {
		t.Fatalf("a clock 10 s ahead: %d alerts, %d open; want one", all, open)
	}
	hub.CheckClock(e.h, time.Now)
	if open, _ := skewAlerts(); open != 0 {
		t.Fatalf("%d clock alerts still open once the clock agrees", open)
	}
}
