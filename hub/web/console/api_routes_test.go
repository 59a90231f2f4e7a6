package console

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/hub/commands"
	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/metrics"
	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/hub/settings"
	"github.com/frank-postage/frank/hub/stock"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/hub/views"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// reportBook is the ledger as far as the activity and reports routes
// read it: the postal reports, from the store.
type reportBook struct {
	ledgerView
	v *views.Views
}

func (b reportBook) Reports(ctx context.Context, limit int) ([]views.SentReport, error) {
	return b.v.Reports(ctx, limit)
}

// routesAPI is the operator API on real operators, fleet, stock, central
// settings, command book and activity: kiosk-1 in store-a and kiosk-2 in
// store-b, ops olga and staff sam (store-a), on a clock the test moves.
type routesAPI struct {
	*tokenAPI
	db       *store.DB
	stock    *stock.Stock
	config   *settings.Settings
	metrics  *metrics.Metrics
	opsRead  string // olga's read-only token
	opsWrite string // olga's write token
	staff    string // sam's write token
}

func newRoutesAPI(t *testing.T, dsn string) *routesAPI {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	a := &routesAPI{tokenAPI: &tokenAPI{t: t, book: &ackBook{}, clock: time.Unix(1_800_000_000, 0)}, db: db}
	now := func() time.Time { return a.clock }
	a.ops = operators.New(db, now)
	a.ops.Cost = bcrypt.MinCost
	reg := fleet.New(db)
	for _, k := range [][2]string{{"kiosk-1", "store-a"}, {"kiosk-2", "store-b"}} {
		if _, err := reg.Add(ctx, k[0], k[1]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.ops.Add(ctx, "olga", "operator password 1", operators.RoleOps, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ops.Add(ctx, "sam", "operator password 1", operators.RoleStaff, []string{"store-a"}); err != nil {
		t.Fatal(err)
	}
	a.stock = stock.New(db, now)
	a.config = settings.New(db, now)
	a.config.Cost = bcrypt.MinCost
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a.metrics = metrics.New(metrics.Sources{Now: now, Log: log})
	c := &Console{People: a.ops, Kiosks: reg, Book: reportBook{v: views.New(db, now)}, Alerts: a.book, Stock: a.stock,
		Activity: a.metrics.Activity(), Commands: commands.New(db, reg, now), Config: a.config, Log: log, Now: now}
	a.h = c.APIRoutes()
	a.opsRead = a.token("olga", operators.ReadOnly, 24*time.Hour)
	a.opsWrite = a.token("olga", operators.ReadWrite, 24*time.Hour)
	a.staff = a.token("sam", operators.ReadWrite, 24*time.Hour)
	return a
}

// send calls the API with tok and a JSON body, and returns the status and
// body.
func (a *routesAPI) send(method, path, tok, body string) (int, string) {
	a.t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	a.h.ServeHTTP(w, req)
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		a.t.Errorf("%s %s: Content-Type %q, want application/json", method, path, ct)
	}
	return w.Code, w.Body.String()
}

// ok calls the API, wants status want, and decodes the answer into v.
func (a *routesAPI) ok(method, path, tok, body string, want int, v any) {
	a.t.Helper()
	st, out := a.send(method, path, tok, body)
	if st != want {
		a.t.Fatalf("%s %s: %d %s, want %d", method, path, st, out, want)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		a.t.Fatalf("%s %s: %v in %s", method, path, err, out)
	}
}

// opsOnly checks that staff, even with a write token, get 403 forbidden
// on each call.
func (a *routesAPI) opsOnly(calls ...string) {
	a.t.Helper()
	for _, call := range calls {
		method, path, _ := strings.Cut(call, " ")
		st, body := a.send(method, path, a.staff, "{}")
		a.refused("staff "+call, st, body, protocol.CodeForbidden, "for vendor ops only")
	}
}

// readOnly checks that a read-only ops token gets 403 forbidden on each
// write.
func (a *routesAPI) readOnly(calls ...string) {
	a.t.Helper()
	for _, call := range calls {
		f := append(strings.SplitN(call, " ", 3), "")
		method, path, body := f[0], f[1], f[2]
		st, out := a.send(method, path, a.opsRead, body)
		a.refused("read-only "+method+" "+path, st, out, protocol.CodeForbidden, "read-only")
	}
}

// has checks that obj carries every documented field.
func has(t *testing.T, what string, obj map[string]any, fields ...string) {
	t.Helper()
	for _, f := range fields {
		if _, ok := obj[f]; !ok {
			t.Errorf("%s: no field %q in %v", what, f, obj)
		}
	}
}

// GET /stock lists the batches newest first with the documented fields;
// staff see only their stores' batches and may issue to their stores.
func TestAPIStock(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		a := newRoutesAPI(t, dsn)
		ctx := context.Background()
		if _, err := a.stock.Issue(ctx, "store-a", 2); err != nil {
			t.Fatal(err)
		}
		a.clock = a.clock.Add(time.Minute)
		if _, err := a.stock.Issue(ctx, "store-b", 3); err != nil {
			t.Fatal(err)
		}
		var ops struct {
			Batches []map[string]any `json:"batches"`
			Stores  []string         `json:"stores"`
		}
		a.ok("GET", "/stock", a.opsRead, "", http.StatusOK, &ops)
		if len(ops.Batches) != 2 || ops.Batches[0]["store"] != "store-b" || ops.Batches[1]["store"] != "store-a" {
			t.Fatalf("ops batches %v, want store-b's then store-a's (newest first)", ops.Batches)
		}
		has(t, "batch", ops.Batches[0], "store", "issued_at", "sheets", "loaded", "labels_used", "labels_left")
		if b := ops.Batches[0]; b["sheets"] != 3.0 || b["loaded"] != 0.0 || b["labels_used"] != 0.0 || b["labels_left"] != 30.0 {
			t.Errorf("store-b's batch %v, want 3 sheets, none loaded, 30 labels left", b)
		}
		if at, err := time.Parse(time.RFC3339, ops.Batches[0]["issued_at"].(string)); err != nil || !at.Equal(a.clock) {
			t.Errorf("issued_at %v (%v), want %v", ops.Batches[0]["issued_at"], err, a.clock)
		}
		if !slices.Equal(ops.Stores, []string{"store-a", "store-b"}) {
			t.Errorf("ops stores %v", ops.Stores)
		}

		var staff struct {
			Batches []map[string]any `json:"batches"`
			Stores  []string         `json:"stores"`
		}
		a.ok("GET", "/stock", a.staff, "", http.StatusOK, &staff)
		if len(staff.Batches) != 1 || staff.Batches[0]["store"] != "store-a" || !slices.Equal(staff.Stores, []string{"store-a"}) {
			t.Errorf("staff see %v, stores %v; want store-a's batch and store-a alone", staff.Batches, staff.Stores)
		}
	})
}

// POST /stock/issue answers 201 with the store and the new serials: ops
// may name a new store, which is created; staff only their own stores; a
// read-only token, a bad body and too many sheets are refused.
func TestAPIStockIssue(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		a := newRoutesAPI(t, dsn)
		var got struct {
			Store  string   `json:"store"`
			Sheets []string `json:"sheets"`
		}
		a.ok("POST", "/stock/issue", a.opsWrite, `{"store":"store-new","sheets":2}`, http.StatusCreated, &got)
		if got.Store != "store-new" || len(got.Sheets) != 2 {
			t.Fatalf("issued %+v, want 2 sheets for store-new", got)
		}
		for _, s := range got.Sheets {
			if p, err := protocol.ParseSheetSerial(s); err != nil || p.String() != s {
				t.Errorf("serial %q is not like 1966-F8CF: %v", s, err)
			}
		}
		batches, err := a.stock.Batches(context.Background())
		if err != nil || len(batches) != 1 || batches[0].Store != "store-new" || batches[0].Sheets != 2 {
			t.Fatalf("batches after issue %+v %v", batches, err)
		}
		a.ok("POST", "/stock/issue", a.opsWrite, `{"store":"web","sheets":1}`, http.StatusCreated, &got)
		if got.Store != "web" || len(got.Sheets) != 1 {
			t.Errorf("issued to web: %+v", got)
		}

		a.ok("POST", "/stock/issue", a.staff, `{"store":"store-a","sheets":1}`, http.StatusCreated, &got)
		if got.Store != "store-a" || len(got.Sheets) != 1 {
			t.Errorf("staff issued %+v, want 1 sheet for store-a", got)
		}
		for _, s := range []string{"store-b", "store-other"} {
			st, body := a.send("POST", "/stock/issue", a.staff, `{"store":"`+s+`","sheets":1}`)
			a.refused("staff issue to "+s, st, body, protocol.CodeInvalidRequest, "not one of yours")
		}
		a.readOnly(`POST /stock/issue {"store":"store-a","sheets":1}`)
		for _, body := range []string{`{"store":"store-a","sheets":0}`, `{"store":"store-a","sheets":1001}`, `{"sheets":1}`,
			`{"store":"store-a","sheets":1,"kiosk":"kiosk-1"}`, `{"store":"store-a","sheets":1}{}`, `not json`} {
			st, out := a.send("POST", "/stock/issue", a.opsWrite, body)
			a.refused("issue "+body, st, out, protocol.CodeInvalidRequest, "")
		}
		if batches, _ := a.stock.Batches(context.Background()); len(batches) != 3 {
			t.Errorf("%d batches after the refusals, want the 3 issued", len(batches))
		}
	})
}

// GET /activity answers the last hour per minute (60 points) and the last
// day per quarter hour (96), each with the documented fields, and the
// postal reports; GET /reports lists the reports newest first. Both are
// for ops only.
func TestAPIActivityAndReports(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		a := newRoutesAPI(t, dsn)
		ctx := context.Background()
		a.metrics.Answered(metrics.ChannelKiosk, 20*time.Millisecond, "")
		a.metrics.Answered(metrics.ChannelWeb, 40*time.Millisecond, "")
		a.metrics.Answered(metrics.ChannelKiosk, 5*time.Millisecond, protocol.CodeLabelUsed)
		day := a.clock.Add(-24 * time.Hour)
		for i, r := range []struct{ state, ref string }{{"accepted", "PA-1"}, {"pending", ""}} {
			from := day.Add(time.Duration(i-1) * 24 * time.Hour)
			if _, err := a.db.ExecContext(ctx, a.db.Rebind(`INSERT INTO reports (period_from, period_to, created_at, body, state, pa_ref) VALUES (?, ?, ?, ?, ?, ?)`),
				from.UnixMicro(), from.Add(24*time.Hour).UnixMicro(), a.clock.UnixMicro(), []byte("{}"), r.state, r.ref); err != nil {
				t.Fatal(err)
			}
		}

		var act struct {
			Hour    []map[string]any `json:"last_hour"`
			Day     []map[string]any `json:"last_day"`
			Reports []map[string]any `json:"postal_reports"`
		}
		a.ok("GET", "/activity", a.opsRead, "", http.StatusOK, &act)
		if len(act.Hour) != 60 || len(act.Day) != 96 {
			t.Fatalf("%d points in the last hour and %d in the last day, want 60 and 96", len(act.Hour), len(act.Day))
		}
		for _, p := range append(act.Hour, act.Day...) {
			has(t, "point", p, "at", "ok", "rejected", "mean_ms", "p95_ms", "max_ms")
		}
		for what, pts := range map[string][]map[string]any{"last hour": act.Hour, "last day": act.Day} {
			last := pts[len(pts)-1]
			if last["ok"] != 2.0 || last["rejected"] != 1.0 || last["max_ms"] != 40.0 {
				t.Errorf("%s: the step in progress is %v, want 2 ok, 1 rejected, max 40 ms", what, last)
			}
			first, _ := time.Parse(time.RFC3339, pts[0]["at"].(string))
			second, _ := time.Parse(time.RFC3339, pts[1]["at"].(string))
			if step := second.Sub(first); what == "last hour" && step != time.Minute || what == "last day" && step != 15*time.Minute {
				t.Errorf("%s: steps of %s", what, step)
			}
		}
		if len(act.Reports) != 2 {
			t.Fatalf("postal_reports %v, want both", act.Reports)
		}

		var reports []map[string]any
		a.ok("GET", "/reports", a.opsRead, "", http.StatusOK, &reports)
		if len(reports) != 2 || reports[0]["state"] != "pending" || reports[1]["state"] != "accepted" || reports[1]["pa_ref"] != "PA-1" {
			t.Fatalf("reports %v, want the pending one, then the accepted PA-1 (newest first)", reports)
		}
		has(t, "report", reports[1], "id", "period_from", "period_to", "created_at", "state", "pa_ref")
		if from, err := time.Parse(time.RFC3339, reports[0]["period_from"].(string)); err != nil || !from.Equal(day) {
			t.Errorf("period_from %v (%v), want %v", reports[0]["period_from"], err, day)
		}
		a.opsOnly("GET /activity", "GET /reports")
	})
}

// Before the first postal report and the first sheet, the lists are
// empty arrays, as the spec's schemas say, not null.
func TestAPIEmptyListsAreArrays(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		a := newRoutesAPI(t, dsn)
		if st, body := a.send("GET", "/stock", a.opsRead, ""); st != http.StatusOK || strings.TrimSpace(body) != `{"batches":[],"stores":[]}` {
			t.Errorf("GET /stock with no sheets: %d %s, want no batches and no stores", st, body)
		}
		if st, body := a.send("GET", "/reports", a.opsRead, ""); st != http.StatusOK || strings.TrimSpace(body) != "[]" {
			t.Errorf("GET /reports with none: %d %s, want []", st, body)
		}
		if st, body := a.send("GET", "/activity", a.opsRead, ""); st != http.StatusOK || !strings.Contains(body, `"postal_reports":[]`) {
			t.Errorf("GET /activity with no report: %d %.80s..., want postal_reports []", st, body)
		}
	})
}

// GET /fleet/{id}/commands lists a kiosk's commands newest first, with
// who gave each; none is an empty array; ops only.
func TestAPIKioskCommands(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		a := newRoutesAPI(t, dsn)
		var none []map[string]any
		if st, body := a.send("GET", "/fleet/kiosk-1/commands", a.opsRead, ""); st != http.StatusOK || strings.TrimSpace(body) != "[]" {
			t.Fatalf("no commands yet: %d %s, want []", st, body)
		}
		var ids []string
		for _, body := range []string{`{"action":"diagnostics"}`, `{"action":"out_of_service","message":"Back soon"}`} {
			var cmd map[string]any
			a.ok("POST", "/fleet/kiosk-1/commands", a.opsWrite, body, http.StatusAccepted, &cmd)
			ids = append(ids, cmd["command_id"].(string))
			a.clock = a.clock.Add(time.Second)
		}
		var other map[string]any
		a.ok("POST", "/fleet/kiosk-2/commands", a.opsWrite, `{"action":"restart"}`, http.StatusAccepted, &other)

		var list []map[string]any
		a.ok("GET", "/fleet/kiosk-1/commands", a.opsRead, "", http.StatusOK, &list)
		if len(list) != 2 || list[0]["command_id"] != ids[1] || list[1]["command_id"] != ids[0] {
			t.Fatalf("commands %v, want %v newest first", list, ids)
		}
		has(t, "command", list[0], "command_id", "kiosk_id", "action", "message", "issued_by", "issued_at", "status")
		if c := list[0]; c["kiosk_id"] != "kiosk-1" || c["action"] != "out_of_service" || c["message"] != "Back soon" || c["issued_by"] != "olga" || c["status"] != "pending" {
			t.Errorf("newest command %v", c)
		}
		if at, err := time.Parse(time.RFC3339, list[1]["issued_at"].(string)); err != nil || !at.Equal(a.clock.Add(-2*time.Second)) {
			t.Errorf("issued_at %v (%v), want %v", list[1]["issued_at"], err, a.clock.Add(-2*time.Second))
		}
		a.ok("GET", "/fleet/kiosk-2/commands", a.opsRead, "", http.StatusOK, &none)
		if len(none) != 1 || none[0]["action"] != "restart" {
			t.Errorf("kiosk-2's commands %v, want its restart alone", none)
		}
		a.opsOnly("GET /fleet/kiosk-1/commands")
	})
}

// GET and PUT /settings, GET /stores/{id}/settings and GET
// /fleet/{id}/settings show what is set on that scope alone, not what it
// inherits; PUT with a write token saves and answers the settings; bad
// values and unknown fields are refused; all are ops only.
func TestAPISettings(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		a := newRoutesAPI(t, dsn)
		get := func(path string) string {
			t.Helper()
			st, body := a.send("GET", path, a.opsRead, "")
			if st != http.StatusOK {
				t.Fatalf("GET %s: %d %s", path, st, body)
			}
			return strings.TrimSpace(body)
		}
		for _, p := range []string{"/settings", "/stores/store-a/settings", "/fleet/kiosk-1/settings"} {
			if got := get(p); got != "{}" {
				t.Errorf("GET %s before any is set: %s, want {}", p, got)
			}
		}

		fleetBody := `{"idle_timeout_s":45,"language":"es"}`
		st, body := a.send("PUT", "/settings", a.opsWrite, fleetBody)
		if st != http.StatusOK || strings.TrimSpace(body) != fleetBody {
			t.Fatalf("PUT /settings: %d %s, want 200 %s", st, body, fleetBody)
		}
		if st, body := a.send("PUT", "/stores/store-a/settings", a.opsWrite, `{"remedy_window_s":600}`); st != http.StatusOK {
			t.Fatalf("PUT /stores/store-a/settings: %d %s", st, body)
		}
		if st, body := a.send("PUT", "/fleet/kiosk-1/settings", a.opsWrite, `{"labels_low":5}`); st != http.StatusOK {
			t.Fatalf("PUT /fleet/kiosk-1/settings: %d %s", st, body)
		}
		for p, want := range map[string]string{"/settings": fleetBody, "/stores/store-a/settings": `{"remedy_window_s":600}`,
			"/fleet/kiosk-1/settings": `{"labels_low":5}`, "/stores/store-b/settings": `{}`, "/fleet/kiosk-2/settings": `{}`} {
			if got := get(p); got != want {
				t.Errorf("GET %s: %s, want %s (its own settings, nothing inherited)", p, got, want)
			}
		}
		if v, err := a.config.Get(context.Background(), settings.Fleet); err != nil || v.IdleTimeoutS != 45 || v.Language != "es" {
			t.Errorf("fleet settings stored %+v %v", v, err)
		}
		var by string
		if err := a.db.QueryRowContext(context.Background(), `SELECT updated_by FROM kiosk_settings WHERE scope = '*'`).Scan(&by); err != nil || by != "olga" {
			t.Errorf("fleet settings saved by %q (%v), want olga", by, err)
		}

		for _, bad := range []string{`{"idle_timeout_s":5}`, `{"language":"fr"}`, `{"idle_timeout":45}`, `{"heartbeat_s":0,"heartbeat_s":1}`, `[]`} {
			st, body := a.send("PUT", "/settings", a.opsWrite, bad)
			a.refused("PUT /settings "+bad, st, body, protocol.CodeInvalidRequest, "")
		}
		if got := get("/settings"); got != fleetBody {
			t.Errorf("GET /settings after the refusals: %s, want %s", got, fleetBody)
		}
		a.readOnly(`PUT /stores/store-a/settings {"remedy_window_s":60}`, `PUT /fleet/kiosk-1/settings {"labels_low":6}`)
		a.opsOnly("GET /settings", "PUT /settings", "GET /stores/store-a/settings", "GET /fleet/kiosk-1/settings")
		if got := get("/stores/store-a/settings"); got != `{"remedy_window_s":600}` {
			t.Errorf("store-a's settings after the refusals: %s", got)
		}
	})
}

// GET and POST /stores/{id}/staff and POST
// /stores/{id}/staff/{name}/revoke: add members (201), list them with
// has_pin and has_badge but never a hash, revoke one (200, revoked_by),
// and the refusals: bad PIN, unknown member, read-only token, staff.
func TestAPIStoreStaff(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		a := newRoutesAPI(t, dsn)
		if st, body := a.send("GET", "/stores/store-a/staff", a.opsRead, ""); st != http.StatusOK || strings.TrimSpace(body) != "[]" {
			t.Fatalf("no staff yet: %d %s, want []", st, body)
		}
		var added map[string]string
		a.ok("POST", "/stores/store-a/staff", a.opsWrite, `{"name":" alice ","pin":"1357"}`, http.StatusCreated, &added)
		if added["store"] != "store-a" || added["name"] != "alice" {
			t.Errorf("added %v, want store-a and alice", added)
		}
		a.ok("POST", "/stores/store-a/staff", a.opsWrite, `{"name":"bob","badge":"STAFF-0042"}`, http.StatusCreated, &added)
		if name, err := a.config.CheckStaff(context.Background(), "store-a", "1357", ""); err != nil || name != "alice" {
			t.Errorf("alice's PIN checks as %q (%v)", name, err)
		}

		st, body := a.send("GET", "/stores/store-a/staff", a.opsRead, "")
		for _, secret := range []string{"1357", "STAFF-0042", "$2a$", settings.BadgeSum("STAFF-0042"), "hash", "sha256"} {
			if strings.Contains(body, secret) {
				t.Errorf("the staff list shows %q: %s", secret, body)
			}
		}
		var list []map[string]any
		if err := json.Unmarshal([]byte(body), &list); st != http.StatusOK || err != nil || len(list) != 2 {
			t.Fatalf("GET staff: %d %s %v", st, body, err)
		}
		has(t, "member", list[0], "name", "store", "has_pin", "has_badge", "added_by", "added_at")
		if m := list[0]; m["name"] != "alice" || m["store"] != "store-a" || m["has_pin"] != true || m["has_badge"] != false || m["added_by"] != "olga" {
			t.Errorf("alice: %v", m)
		}
		if m := list[1]; m["name"] != "bob" || m["has_pin"] != false || m["has_badge"] != true {
			t.Errorf("bob: %v", m)
		}

		var revoked map[string]string
		a.clock = a.clock.Add(time.Hour)
		a.ok("POST", "/stores/store-a/staff/alice/revoke", a.opsWrite, "", http.StatusOK, &revoked)
		if revoked["store"] != "store-a" || revoked["name"] != "alice" || revoked["revoked_by"] != "olga" {
			t.Errorf("revoked %v", revoked)
		}
		a.ok("GET", "/stores/store-a/staff", a.opsRead, "", http.StatusOK, &list)
		if at, err := time.Parse(time.RFC3339, list[0]["revoked_at"].(string)); err != nil || !at.Equal(a.clock) || list[0]["revoked_by"] != "olga" {
			t.Errorf("alice after the revoke: %v (%v)", list[0], err)
		}
		if _, ok := list[1]["revoked_at"]; ok {
			t.Errorf("bob revoked too: %v", list[1])
		}
		if name, err := a.config.CheckStaff(context.Background(), "store-a", "1357", ""); err != nil || name != "" {
			t.Errorf("revoked alice's PIN still checks as %q (%v)", name, err)
		}

		st, body = a.send("POST", "/stores/store-a/staff/alice/revoke", a.opsWrite, "")
		a.refused("revoke alice again", st, body, protocol.CodeInvalidRequest, "no active staff member")
		st, body = a.send("POST", "/stores/store-a/staff/nobody/revoke", a.opsWrite, "")
		a.refused("revoke nobody", st, body, protocol.CodeInvalidRequest, "no active staff member")
		for _, bad := range []string{`{"name":"carol","pin":"12"}`, `{"name":"carol","pin":"12ab"}`, `{"name":"carol"}`,
			`{"name":"carol","badge":"0042"}`, `{"name":"","pin":"1357"}`, `{"name":"carol","pin":"1357","role":"boss"}`} {
			st, body := a.send("POST", "/stores/store-a/staff", a.opsWrite, bad)
			a.refused("add "+bad, st, body, protocol.CodeInvalidRequest, "")
		}
		st, body = a.send("POST", "/stores/no-such-store/staff", a.opsWrite, `{"name":"carol","pin":"1357"}`)
		a.refused("add to a store that does not exist", st, body, protocol.CodeInvalidRequest, "no store")

		a.readOnly(`POST /stores/store-a/staff {"name":"carol","pin":"2468"}`, "POST /stores/store-a/staff/bob/revoke")
		// Staff of store-a may not manage store-a's staff.
		a.opsOnly("GET /stores/store-a/staff", "POST /stores/store-a/staff", "POST /stores/store-a/staff/bob/revoke")
		if all, err := a.config.Staff(context.Background(), "store-a"); err != nil || len(all) != 2 || all[1].Revoked != nil {
			t.Errorf("staff after the refusals: %+v %v, want alice and bob, bob active", all, err)
		}
	})
}

// A member whose name needs escaping in a path ("Smith, Ann", escaped as
// url.PathEscape does) is revoked by the name as added.
func TestAPIRevokeStaffEscapedName(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		a := newRoutesAPI(t, dsn)
		var added map[string]string
		a.ok("POST", "/stores/store-a/staff", a.opsWrite, `{"name":"Smith, Ann","pin":"1357"}`, http.StatusCreated, &added)
		var revoked map[string]string
		a.ok("POST", "/stores/store-a/staff/"+url.PathEscape("Smith, Ann")+"/revoke", a.opsWrite, "", http.StatusOK, &revoked)
		if revoked["name"] != "Smith, Ann" {
			t.Errorf("revoked %v, want the name Smith, Ann", revoked)
		}
		if all, err := a.config.Staff(context.Background(), "store-a"); err != nil || len(all) != 1 || all[0].Revoked == nil {
			t.Errorf("staff after the revoke: %+v %v", all, err)
		}
	})
}
