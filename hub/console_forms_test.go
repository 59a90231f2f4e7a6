package hub_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/frank-postage/frank/hub/settings"
	"github.com/frank-postage/frank/protocol"
)

// opsOnlyRefusal is what store staff get from an ops page; a forged or
// missing CSRF token is a 403 too, so the tests check the words.
const opsOnlyRefusal = "this page is for vendor ops"

// "Check again" on the funds page runs the ledger check then, rather than
// showing the one the page ran less than a minute before; store staff
// cannot run it.
func TestConsoleFundsCheck(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ops := e.operator("olga", "ops")
	// The hub's clock stands still: the page's check stays a minute old.
	if st, _, page := ops.do("GET", "/console/funds", nil); st != http.StatusOK || !strings.Contains(page, "OK</strong> (0 indicia)") {
		t.Fatalf("funds page before any sale: %d\n%s", st, page)
	}
	if res := decode(t, e.kiosk("kiosk-1").ask(purchase("fc-1", "kiosk-1", "1966-F8CF-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("sale: %+v", res.Error)
	}
	if _, _, page := ops.do("GET", "/console/funds", nil); !strings.Contains(page, "OK</strong> (0 indicia)") {
		t.Fatalf("the funds page ran the check again within the minute:\n%s", page)
	}

	staff := e.operator("sam", "staff", "store-a")
	if st, _, body := staff.post("/console/", "/console/funds/check", url.Values{}); st != http.StatusForbidden || !strings.Contains(body, opsOnlyRefusal) {
		t.Fatalf("store staff ran the ledger check: %d %s", st, body)
	}
	if _, _, page := ops.do("GET", "/console/funds", nil); !strings.Contains(page, "OK</strong> (0 indicia)") {
		t.Fatalf("store staff's refused check ran:\n%s", page)
	}

	if st, loc, body := ops.post("/console/funds", "/console/funds/check", url.Values{}); st != http.StatusSeeOther || loc != "/console/funds" {
		t.Fatalf("check again: %d %s %s", st, loc, body)
	}
	if _, _, page := ops.do("GET", "/console/funds", nil); !strings.Contains(page, "OK</strong> (1 indicia)") {
		t.Fatalf("the funds page after check again does not show the sale's indicium:\n%s", page)
	}
}

// The fleet settings form stores the fleet's settings and sends them to
// every kiosk; a bad value saves nothing; store staff cannot use it.
func TestConsoleFleetSettings(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	cfg1, cfg2 := e.kiosk("kiosk-1").configsOf(t), e.kiosk("kiosk-2").configsOf(t)
	cc := e.h.CentralConfig()

	staff := e.operator("sam", "staff", "store-a")
	form := url.Values{"remedy_window_s": {"900"}, "language": {"es"}}
	if st, _, body := staff.post("/console/", "/console/settings", form); st != http.StatusForbidden || !strings.Contains(body, opsOnlyRefusal) {
		t.Fatalf("store staff saved the fleet's settings: %d %s", st, body)
	}
	if got, err := cc.Get(ctx, settings.Fleet); err != nil || got != (protocol.KioskSettings{}) {
		t.Fatalf("the fleet's settings after store staff's refused form: %+v %v", got, err)
	}

	ops := e.operator("olga", "ops")
	if st, _, page := ops.do("GET", "/console/settings", nil); st != http.StatusOK || !strings.Contains(page, `action="/console/settings"`) {
		t.Fatalf("fleet settings page: %d\n%s", st, page)
	}
	form = url.Values{"remedy_window_s": {"900"}, "idle_timeout_s": {""}, "language": {"es"}, "labels_low": {"12"}, "paper_alert": {"near_end"}}
	st, loc, _ := ops.post("/console/settings", "/console/settings", form)
	if st != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/settings?flash=Settings+saved") {
		t.Fatalf("save: %d %s", st, loc)
	}
	want := protocol.KioskSettings{RemedyWindowS: 900, Language: "es", LabelsLow: 12, PaperAlert: "near_end"}
	if got, err := cc.Get(ctx, settings.Fleet); err != nil || got != want {
		t.Fatalf("the fleet's settings: %+v %v, want %+v", got, err, want)
	}
	// Both stores' kiosks get them.
	for id, ch := range map[string]<-chan protocol.KioskConfig{"kiosk-1": cfg1, "kiosk-2": cfg2} {
		c := waitConfig(t, ch, id+": the fleet's remedy window", func(c protocol.KioskConfig) bool { return c.Settings.RemedyWindowS == 900 })
		if c.Settings.Language != "es" || c.Settings.LabelsLow != 12 || c.Settings.PaperAlert != "near_end" {
			t.Errorf("%s's config %+v", id, c.Settings)
		}
	}
	if _, _, page := ops.do("GET", "/console/settings", nil); !strings.Contains(page, `name="remedy_window_s" inputmode="numeric" value="900"`) {
		t.Fatalf("the fleet settings page does not show the remedy window saved:\n%s", page)
	}

	form = url.Values{"remedy_window_s": {"5"}, "language": {"en"}}
	if _, loc, _ := ops.post("/console/settings", "/console/settings", form); !strings.Contains(loc, "Not+saved") {
		t.Fatalf("a remedy window of 5 s: %s", loc)
	}
	if got, err := cc.Get(ctx, settings.Fleet); err != nil || got != want {
		t.Fatalf("a refused form changed the fleet's settings: %+v %v", got, err)
	}
}

// Revoking a member on the store's page revokes them at the hub and at
// the store's kiosks, and the page says by whom; store staff cannot.
func TestConsoleStaffRevoke(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	cfgs := e.kiosk("kiosk-1").configsOf(t)
	cc := e.h.CentralConfig()
	for _, name := range []string{"alice", "bob"} {
		if err := cc.AddStaff(ctx, "store-a", name, "1357", "", "ann"); err != nil {
			t.Fatal(err)
		}
	}
	waitConfig(t, cfgs, "two staff", func(c protocol.KioskConfig) bool { return len(c.StaffNames) == 2 })
	active := func(name string) bool {
		t.Helper()
		list, err := cc.Staff(ctx, "store-a")
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range list {
			if m.Name == name {
				return m.Revoked == nil
			}
		}
		t.Fatalf("%s is not on store-a's list", name)
		return false
	}

	staff := e.operator("sam", "staff", "store-a")
	if st, _, body := staff.post("/console/", "/console/stores/store-a/staff/revoke", url.Values{"name": {"alice"}}); st != http.StatusForbidden || !strings.Contains(body, opsOnlyRefusal) {
		t.Fatalf("store staff revoked a member: %d %s", st, body)
	}
	if !active("alice") {
		t.Fatal("alice revoked by store staff's refused form")
	}

	ops := e.operator("olga", "ops")
	st, loc, _ := ops.post("/console/stores/store-a", "/console/stores/store-a/staff/revoke", url.Values{"name": {"alice"}})
	if st != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/stores/store-a?flash=alice+revoked") {
		t.Fatalf("revoke: %d %s", st, loc)
	}
	if active("alice") || !active("bob") {
		t.Fatal("after revoking alice: want alice revoked, bob active")
	}
	c := waitConfig(t, cfgs, "alice gone", func(c protocol.KioskConfig) bool { return len(c.StaffNames) == 1 })
	if c.StaffNames[0] != "bob" || !c.StaffManaged {
		t.Fatalf("kiosk-1's staff after the revocation: %+v", c.StaffNames)
	}
	_, _, page := ops.do("GET", "/console/stores/store-a", nil)
	_, row, ok := strings.Cut(page, `data-name="alice"`)
	if !ok {
		t.Fatalf("alice is not on the store's page:\n%s", page)
	}
	row, _, _ = strings.Cut(row, "</tr>")
	if !strings.Contains(row, "revoked") || !strings.Contains(row, "by olga") || strings.Contains(row, "staff/revoke") {
		t.Fatalf("alice's row on the store's page: %s", row)
	}
	if _, loc, _ := ops.post("/console/stores/store-a", "/console/stores/store-a/staff/revoke", url.Values{"name": {"alice"}}); !strings.Contains(loc, "Not+revoked") {
		t.Fatalf("revoking alice again: %s", loc)
	}
}

// A settings form saves only over the settings it showed: an operator who
// loaded the page before another's save (on this hub or another) is told,
// instead of undoing that save unseen.
func TestConsoleSettingsNotSavedOverAnotherSave(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	olga, oleg := e.operator("olga", "ops"), e.operator("oleg", "ops")
	_, _, page := oleg.do("GET", "/console/stores/store-a", nil)
	stale := revisionField.FindStringSubmatch(page)
	if stale == nil {
		t.Fatalf("the store's settings form carries no revision:\n%s", page)
	}
	if _, loc, _ := olga.post("/console/stores/store-a", "/console/stores/store-a/settings", url.Values{"language": {"es"}}); !strings.Contains(loc, "Settings+saved") {
		t.Fatalf("olga's save: %s", loc)
	}
	_, loc, _ := oleg.post("/console/stores/store-a", "/console/stores/store-a/settings", url.Values{"labels_low": {"7"}, "revision": {stale[1]}})
	if !strings.Contains(loc, "Not+saved") || !strings.Contains(loc, "olga") {
		t.Fatalf("oleg's save over a form loaded before olga's: %s", loc)
	}
	if got, err := e.h.CentralConfig().Get(ctx, settings.StoreScope("store-a")); err != nil || got.Language != "es" || got.LabelsLow != 0 {
		t.Fatalf("store-a's settings: %+v %v, want olga's", got, err)
	}
	// Loaded again, oleg's change saves over olga's.
	if _, loc, _ := oleg.post("/console/stores/store-a", "/console/stores/store-a/settings", url.Values{"language": {"es"}, "labels_low": {"7"}}); !strings.Contains(loc, "Settings+saved") {
		t.Fatalf("oleg's save on a fresh form: %s", loc)
	}
}
