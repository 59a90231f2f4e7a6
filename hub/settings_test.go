package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/hub/settings"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// configsOf subscribes a stand-in kiosk to its retained config.
func (k *kioskClient) configsOf(t *testing.T) <-chan protocol.KioskConfig {
	t.Helper()
	ch := make(chan protocol.KioskConfig, 16)
	tok := k.c.Subscribe(protocol.KioskTopic(k.id, protocol.TopicConfig), 1, func(_ mqtt.Client, m mqtt.Message) {
		c, err := protocol.DecodeKioskConfig(m.Payload())
		if err != nil {
			t.Errorf("config %s: %v", m.Payload(), err)
			return
		}
		ch <- *c
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return ch
}

// waitConfig waits for a config that ok accepts.
func waitConfig(t *testing.T, ch <-chan protocol.KioskConfig, what string, ok func(protocol.KioskConfig) bool) protocol.KioskConfig {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case c := <-ch:
			if ok(c) {
				return c
			}
		case <-deadline:
			t.Fatalf("no config with %s", what)
		}
	}
}

// Settings and staff set centrally reach the kiosks of their scope at
// once (console, operator API), or within the leading hub's next round
// when made elsewhere (the command line), and a revoked member leaves
// every kiosk's list.
func TestCentralConfigPushed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	cfgs := k.configsOf(t)
	cc := e.h.CentralConfig()

	if err := cc.Set(ctx, settings.Fleet, protocol.KioskSettings{RemedyWindowS: 600, Language: "en"}, "ann"); err != nil {
		t.Fatal(err)
	}
	if err := cc.Set(ctx, settings.StoreScope("store-a"), protocol.KioskSettings{Language: "es", IdleTimeoutS: 90, HeartbeatS: 7200}, "ann"); err == nil {
		t.Fatal("a heartbeat of 2 hours accepted")
	}
	if err := cc.Set(ctx, settings.StoreScope("store-a"), protocol.KioskSettings{Language: "es", IdleTimeoutS: 90, HeartbeatS: 3000, LabelsLow: 5}, "ann"); err != nil {
		t.Fatal(err)
	}
	c := waitConfig(t, cfgs, "store-a's language", func(c protocol.KioskConfig) bool { return c.Settings.Language == "es" })
	if c.Settings.RemedyWindowS != 600 || c.Settings.IdleTimeoutS != 90 || c.HeartbeatS != 30 || c.StaffManaged {
		t.Fatalf("config %+v (the fleet's remedy window, the store's idle timeout, never a slower heartbeat than the hub's)", c)
	}
	if err := cc.AddStaff(ctx, "store-a", "alice", "1357", "", "ann"); err != nil {
		t.Fatal(err)
	}
	if err := cc.AddStaff(ctx, "store-a", "bob", "", "STAFF-BOB-7", "ann"); err != nil {
		t.Fatal(err)
	}
	c = waitConfig(t, cfgs, "two staff", func(c protocol.KioskConfig) bool { return len(c.StaffNames) == 2 })
	if !c.StaffManaged || !slices.Equal(c.StaffNames, []string{"alice", "bob"}) {
		t.Fatalf("staff %+v", c.StaffNames)
	}
	for _, bad := range [][3]string{{"store-a", "carol", "12"}, {"store-a", "", "1234"}, {"store-z", "dan", "1234"}} {
		if err := cc.AddStaff(ctx, bad[0], bad[1], bad[2], "", "ann"); protocol.AsError(err).Code != protocol.CodeInvalidRequest {
			t.Errorf("staff %v: %v", bad, err)
		}
	}
	// Revoked from the command line (no broker in that process): the
	// leading hub pushes it.
	if err := e.h.Settings().RevokeStaff(ctx, "store-a", "alice", "cli:root"); err != nil {
		t.Fatal(err)
	}
	e.h.Round() // the leader's round, rather than in up to a sixth of the lease
	c = waitConfig(t, cfgs, "alice revoked", func(c protocol.KioskConfig) bool { return len(c.StaffNames) == 1 })
	if c.StaffNames[0] != "bob" || !c.StaffManaged {
		t.Fatalf("staff after the revocation %+v", c.StaffNames)
	}
	list, err := cc.Staff(ctx, "store-a")
	if err != nil || len(list) != 2 || list[0].Revoked == nil || list[0].RevokedBy != "cli:root" {
		t.Fatalf("the store's staff: %+v %v", list, err)
	}
	// The store's labels_low is the one its kiosks' alerts use: 10 labels
	// are no alert (the hub's own threshold is 20), 4 are.
	at := time.Now().UTC()
	for _, n := range []int{10, 4} {
		at = at.Add(time.Second)
		b, _ := json.Marshal(protocol.Telemetry{KioskID: "kiosk-1", At: at, Paper: "ok", Printer: "ok", Scale: "ok", LabelsLeft: n, InService: true})
		k.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicTelemetry), 1, false, b).WaitTimeout(5 * time.Second)
	}
	var low alerts.Alert
	wait.For(t, 10*time.Second, "labels_low at 4 labels", func() bool {
		open, _ := e.h.Alerts().List(ctx, true)
		i := slices.IndexFunc(open, func(a alerts.Alert) bool { return a.Kind == alerts.LabelsLow && a.Subject == "kiosk/kiosk-1" })
		if i >= 0 {
			low = open[i]
		}
		return i >= 0
	})
	if !strings.Contains(low.Message, "4 labels left (alert below 5)") {
		t.Fatalf("labels_low: %q", low.Message)
	}
}

// A kiosk's own settings, set on its console page, win over its store's
// and reach it alone; store staff cannot set them.
func TestKioskSettingsFromTheConsole(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	k1, k2 := e.kiosk("kiosk-1"), e.kiosk("kiosk-2")
	cfg1, cfg2 := k1.configsOf(t), k2.configsOf(t)
	if err := e.h.CentralConfig().Set(ctx, settings.StoreScope("store-a"), protocol.KioskSettings{IdleTimeoutS: 90}, "ann"); err != nil {
		t.Fatal(err)
	}
	waitConfig(t, cfg1, "store-a's idle timeout", func(c protocol.KioskConfig) bool { return c.Settings.IdleTimeoutS == 90 })

	con := e.operator("olga-ops", "ops")
	_, _, page := con.do("GET", "/console/kiosks/kiosk-1", nil)
	if !strings.Contains(page, `href="/console/kiosks/kiosk-1/settings"`) {
		t.Fatalf("the kiosk page has no link to its settings:\n%s", page)
	}
	st, _, page := con.do("GET", "/console/kiosks/kiosk-1/settings", nil)
	if st != http.StatusOK || !strings.Contains(page, `action="/console/kiosks/kiosk-1/settings"`) {
		t.Fatalf("kiosk-1's settings page: %d\n%s", st, page)
	}
	if st, _, _ := con.do("GET", "/console/kiosks/nobody/settings", nil); st != http.StatusNotFound {
		t.Fatalf("an unknown kiosk's settings page: %d", st)
	}
	form := url.Values{"idle_timeout_s": {"45"}, "language": {"es"}}
	st, loc, _ := con.post("/console/kiosks/kiosk-1/settings", "/console/kiosks/kiosk-1/settings", form)
	if st != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/kiosks/kiosk-1/settings?flash=Settings+saved") {
		t.Fatalf("save: %d %s", st, loc)
	}
	c := waitConfig(t, cfg1, "kiosk-1's own settings", func(c protocol.KioskConfig) bool { return c.Settings.IdleTimeoutS == 45 })
	if c.Settings.Language != "es" {
		t.Fatalf("kiosk-1's config %+v", c.Settings)
	}
	if got, err := e.h.CentralConfig().Get(ctx, settings.KioskScope("kiosk-1")); err != nil || got.IdleTimeoutS != 45 {
		t.Fatalf("kiosk-1's own settings: %+v %v", got, err)
	}
	form = url.Values{"idle_timeout_s": {"5"}}
	if _, loc, _ := con.post("/console/kiosks/kiosk-1/settings", "/console/kiosks/kiosk-1/settings", form); !strings.Contains(loc, "Not+saved") {
		t.Fatalf("an idle timeout of 5 s: %s", loc)
	}
	// kiosk-2, of another store, hears nothing of it.
	select {
	case c := <-cfg2:
		if c.Settings.IdleTimeoutS == 45 {
			t.Fatalf("kiosk-2 got kiosk-1's settings: %+v", c.Settings)
		}
	default:
	}
	staff := e.operator("stan-staff", "staff", "store-a")
	if st, _, _ := staff.do("GET", "/console/kiosks/kiosk-1/settings", nil); st != http.StatusForbidden {
		t.Fatalf("store staff opened a kiosk's settings: %d", st)
	}

	// Each route sets its own scope: the store's page, and the operator
	// API's store and kiosk settings.
	if st, _, page := con.do("GET", "/console/stores/store-a", nil); st != http.StatusOK || !strings.Contains(page, `id="staff"`) {
		t.Fatalf("store-a's page: %d\n%s", st, page)
	}
	tok, err := e.h.Operators().NewToken(ctx, "olga-ops", "settings test", operators.ReadWrite, operators.DefaultTokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	put := func(path, body string) {
		t.Helper()
		req, _ := http.NewRequest("PUT", e.h.URL()+"/api/v1/ops"+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := con.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PUT %s: %s", path, resp.Status)
		}
	}
	put("/stores/store-a/settings", `{"labels_low": 7}`)
	put("/fleet/kiosk-2/settings", `{"labels_low": 9}`)
	for scope, want := range map[string]int{settings.StoreScope("store-a"): 7, settings.KioskScope("kiosk-2"): 9, settings.KioskScope("store-a"): 0} {
		if got, err := e.h.CentralConfig().Get(ctx, scope); err != nil || got.LabelsLow != want {
			t.Errorf("%s after the API's PUTs: %+v %v, want labels_low %d", scope, got, err, want)
		}
	}
}

// A store's or a kiosk's paper_alert is the one its paper_out alert uses:
// with the hub's --paper-alert at out, paper near its end raises the alert
// only where the setting says near_end, and a kiosk's own setting wins
// over its store's.
func TestPaperAlertFromSettings(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	k1, k2 := e.kiosk("kiosk-1"), e.kiosk("kiosk-2")
	cfg1, cfg2 := k1.configsOf(t), k2.configsOf(t)
	cc := e.h.CentralConfig()
	at := time.Now().UTC()
	// Each heartbeat is below the hub's labels_low (20) as well: the same
	// heartbeat raises that, so once it is open the paper was judged too.
	beat := func(k *kioskClient, paper string, labels int) {
		t.Helper()
		at = at.Add(time.Second)
		b, _ := json.Marshal(protocol.Telemetry{KioskID: k.id, At: at, Paper: paper, Printer: "ok", Scale: "ok", LabelsLeft: labels, InService: true})
		k.c.Publish(protocol.KioskTopic(k.id, protocol.TopicTelemetry), 1, false, b).WaitTimeout(5 * time.Second)
	}
	open := func(kind, kioskID string) bool {
		t.Helper()
		as, err := e.h.Alerts().List(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(as, func(a alerts.Alert) bool { return a.Kind == kind && a.Subject == "kiosk/"+kioskID })
	}

	if err := cc.Set(ctx, settings.StoreScope("store-a"), protocol.KioskSettings{PaperAlert: "near_end"}, "ann"); err != nil {
		t.Fatal(err)
	}
	waitConfig(t, cfg1, "store-a's paper_alert", func(c protocol.KioskConfig) bool { return c.Settings.PaperAlert == "near_end" })
	beat(k1, "near_end", 10)
	beat(k2, "near_end", 10)
	wait.For(t, 10*time.Second, "kiosk-1's paper_out at near_end", func() bool { return open(alerts.PaperOut, "kiosk-1") })
	wait.For(t, 10*time.Second, "kiosk-2's labels_low", func() bool { return open(alerts.LabelsLow, "kiosk-2") })
	if open(alerts.PaperOut, "kiosk-2") {
		t.Fatal("kiosk-2, of store-b, raised paper_out at near_end: store-a's setting reached it")
	}

	// kiosk-2's own setting, and kiosk-1's own over its store's.
	if err := cc.Set(ctx, settings.KioskScope("kiosk-2"), protocol.KioskSettings{PaperAlert: "near_end"}, "ann"); err != nil {
		t.Fatal(err)
	}
	if err := cc.Set(ctx, settings.KioskScope("kiosk-1"), protocol.KioskSettings{PaperAlert: "out"}, "ann"); err != nil {
		t.Fatal(err)
	}
	waitConfig(t, cfg2, "kiosk-2's paper_alert", func(c protocol.KioskConfig) bool { return c.Settings.PaperAlert == "near_end" })
	waitConfig(t, cfg1, "kiosk-1's paper_alert", func(c protocol.KioskConfig) bool { return c.Settings.PaperAlert == "out" })
	beat(k2, "near_end", 10)
	beat(k1, "near_end", 10)
	wait.For(t, 10*time.Second, "kiosk-2's paper_out at near_end", func() bool { return open(alerts.PaperOut, "kiosk-2") })
	wait.For(t, 10*time.Second, "kiosk-1's paper_out cleared at near_end", func() bool { return !open(alerts.PaperOut, "kiosk-1") })
}

// A change made elsewhere (the command line) reaches the kiosks whatever
// the writer's clock says. Hubs noticed it by the latest time stamped on
// the settings and staff, so a revocation from a machine a second behind
// the hub (or stamped earlier and committed later) was never pushed, and
// the revoked member's session at the kiosk stayed open.
func TestChangeStampedEarlierPushed(t *testing.T) {
	t.Parallel()
	for _, skew := range []time.Duration{-time.Second, time.Second} {
		e := newEnv(t)
		ctx := context.Background()
		k := e.kiosk("kiosk-1")
		cfgs := k.configsOf(t)
		cc := e.h.CentralConfig()
		for _, n := range []string{"alice", "bob"} {
			if err := cc.AddStaff(ctx, "store-a", n, "1357", "", "ann"); err != nil {
				t.Fatal(err)
			}
		}
		waitConfig(t, cfgs, "two staff", func(c protocol.KioskConfig) bool { return len(c.StaffNames) == 2 })
		e.h.Round() // the leader notes the change it pushed already
		cli := settings.New(e.openDB(), func() time.Time { return e.clock.Now().Add(skew) })
		if err := cli.RevokeStaff(ctx, "store-a", "alice", "cli:root"); err != nil {
			t.Fatal(err)
		}
		e.h.Round()
		waitConfig(t, cfgs, fmt.Sprintf("alice revoked from a clock %s off", skew), func(c protocol.KioskConfig) bool {
			return !slices.Contains(c.StaffNames, "alice")
		})
	}
}
