// Package console is the hub's ops console and operator API. Ops see and
// act on everything: the fleet (live), postage funds, alerts, label stock
// and activity. Store staff see only their own stores' kiosks and stock.
// The pages are server-rendered templates with one small script for the
// live fleet table; the JSON API under /api/v1/ops serves the same views
// to scripts holding an API token (docs/openapi.yaml).
package console

import (
	"context"
	"embed"
	"github.com/frank-postage/frank/hub/views"
	"html/template"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/ca"
	"github.com/frank-postage/frank/hub/commands"
	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/metrics"
	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/hub/stock"
	"github.com/frank-postage/frank/hub/web/session"
	"github.com/frank-postage/frank/protocol"
)

// people checks operators' logins and tokens.
type people interface {
	Authenticate(ctx context.Context, login, password string) (*operators.Operator, error)
	ByID(ctx context.Context, id int64) (*operators.Operator, error)
	ByToken(ctx context.Context, token string) (*operators.Operator, error)
}

// kiosks lists the provisioned fleet.
type kiosks interface {
	List(ctx context.Context) ([]fleet.Kiosk, error)
}

// presence is what the hub last heard from each kiosk.
type presence interface {
	List() []fleet.KioskState
	History(id string) []protocol.Telemetry
	Changed() <-chan struct{}
}

// ledgerView is the ledger, read-only.
type ledgerView interface {
	PSDs(ctx context.Context) ([]ledger.PSDView, error)
	Fundings(ctx context.Context, limit int) ([]views.Funding, error)
	Reports(ctx context.Context, limit int) ([]views.SentReport, error)
	SalesOf(ctx context.Context, kioskID string, limit int) ([]views.SaleRow, error)
	SalesToday(ctx context.Context) (map[string]int, error)
	Search(ctx context.Context, kind, q string, f views.Filter, limit int) ([]views.Sale, error)
	Export(ctx context.Context, what string, f views.Filter, emit func(row []string) error) error
	Shift(ctx context.Context, store, kiosk string, from, to time.Time) (views.Shift, error)
	Check(ctx context.Context) (*ledger.Report, error)
	Halted() string
}

// workers reports the PSDM workers.
type workers interface {
	Status() []psdm.Status
}

// alertBook lists and acknowledges alerts.
type alertBook interface {
	List(ctx context.Context, openOnly bool) ([]alerts.Alert, error)
	Ack(ctx context.Context, id int64, by string) error
}

// labelStock is the label stock.
type labelStock interface {
	Batches(ctx context.Context) ([]stock.Batch, error)
	Issue(ctx context.Context, storeID string, n int) ([]protocol.SheetSerial, error)
	AddStore(ctx context.Context, id, name string) error
}

// commandBook gives kiosks ops' commands and keeps their answers.
type commandBook interface {
	Issue(ctx context.Context, kioskID, action, message, by string) (*commands.Command, error)
	Of(ctx context.Context, kioskID string, limit int) ([]commands.Command, error)
	LastDiagnostics(ctx context.Context, kioskID string) (*commands.Command, error)
	Get(ctx context.Context, id string) (*commands.Command, error)
}

// certs finds the certificates the device CA issued.
type certs interface {
	Latest(ctx context.Context, subject string) (*ca.Issued, error)
}

// activity is the recent throughput and latency.
type activity interface {
	Series(span, step time.Duration) []metrics.Point
}

// Console serves the console pages and the operator API.
type Console struct {
	People   people
	Kiosks   kiosks
	Presence presence
	Book     ledgerView
	Workers  workers
	Alerts   alertBook
	Stock    labelStock
	Activity activity
	Certs    certs // may be nil
	Commands commandBook
	Config   centralConfig
	Rollouts rolloutBook
	// Licence is the vendor's postal licence, shown with the funds.
	Licence string
	// Refund takes back an unused kiosk stamp at the counter, if may says
	// the operator looks after the kiosk that sold it.
	Refund func(ctx context.Context, label protocol.LabelSerial, by, why string, may func(kioskID string) bool) (protocol.Mills, error)
	// Retire takes a kiosk out of the fleet and says what it did; ops only.
	Retire   func(ctx context.Context, kioskID, why string, lost bool) (string, error)
	Sessions *session.Manager
	Logins   *session.Logins
	Log      *slog.Logger
	Now      func() time.Time

	stopOnce sync.Once
	stop     chan struct{}

	checkMu sync.Mutex
	checked checkResult
}

// checkResult is the last ledger check, kept a minute: a full check reads
// the whole ledger.
type checkResult struct {
	At         time.Time `json:"at"`
	OK         bool      `json:"ok"`
	Indicia    int       `json:"indicia"`
	Violations []string  `json:"violations"`
	Err        string    `json:"error,omitempty"`
}

// Stop ends the live streams, so the server can shut down.
func (c *Console) Stop() {
	c.init()
	c.stopOnce.Do(func() { close(c.stop) })
}

func (c *Console) init() {
	c.checkMu.Lock()
	if c.stop == nil {
		c.stop = make(chan struct{})
	}
	c.checkMu.Unlock()
}

//go:embed templates
var templateFS embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"date": func(t time.Time) string {
		if t.IsZero() || t.Unix() <= 0 {
			return "—"
		}
		return t.Local().Format("2006-01-02 15:04:05")
	},
	"day":   func(t time.Time) string { return t.Local().Format("2006-01-02") },
	"chart": chart,
	"inc":   func(i int) int { return i + 1 },
	"actions": func() []string { // updates go by rollouts
		return slices.DeleteFunc(slices.Clone(protocol.Actions), func(a string) bool { return a == protocol.ActionUpdate })
	},
	"languages": func() []string { return protocol.Languages },
	"actionName": func(a string) string {
		return map[string]string{protocol.ActionOutOfService: "Out of service", protocol.ActionInService: "Back in service",
			protocol.ActionRestart: "Restart", protocol.ActionDiagnostics: "Collect diagnostics", protocol.ActionResyncStock: "Resync stock",
			protocol.ActionLock: "Lock", protocol.ActionUnlock: "Unlock"}[a]
	},
}).ParseFS(templateFS, "templates/*.html"))

// KioskRow is one kiosk in the fleet table, the live stream and the API.
type KioskRow struct {
	ID         string    `json:"id"`
	Store      string    `json:"store"`
	State      string    `json:"state"` // online, offline, or unknown: never heard from since the hub started
	LastSeen   time.Time `json:"last_seen"`
	Seen       string    `json:"seen"` // LastSeen as shown
	Firmware   string    `json:"firmware"`
	LabelsLeft int       `json:"labels_left"`
	Paper      string    `json:"paper"`
	Printer    string    `json:"printer"`
	Scale      string    `json:"scale"`
	LastError  string    `json:"last_error"`
	SalesToday int       `json:"sales_today"`
	Locked     bool      `json:"locked"` // by ops: the hub refuses its sales
}

// Refill is a kiosk that needs paper or labels: its open paper_out or
// labels_low alert, shown to the staff of its store.
type Refill struct {
	Kiosk   string `json:"kiosk"`
	Store   string `json:"store"`
	Need    string `json:"need"` // paper, labels
	Message string `json:"message"`
}

// refill lists the open paper_out and labels_low alerts of the kiosks in
// rows (those the operator may see).
func (c *Console) refill(ctx context.Context, rows []KioskRow) ([]Refill, error) {
	open, err := c.Alerts.List(ctx, true)
	if err != nil {
		return nil, err
	}
	store := map[string]string{}
	for _, r := range rows {
		store[r.ID] = r.Store
	}
	var out []Refill
	for _, a := range open {
		need := map[string]string{alerts.PaperOut: "paper", alerts.LabelsLow: "labels"}[a.Kind]
		id, ok := strings.CutPrefix(a.Subject, "kiosk/")
		if need == "" || !ok {
			continue
		}
		if st, mine := store[id]; mine {
			out = append(out, Refill{Kiosk: id, Store: st, Need: need, Message: a.Message})
		}
	}
	slices.SortFunc(out, func(a, b Refill) int { return strings.Compare(a.Kiosk+a.Need, b.Kiosk+b.Need) })
	return out, nil
}

// fleetRows lists the kiosks op may see.
func (c *Console) fleetRows(ctx context.Context, op *operators.Operator) ([]KioskRow, error) {
	ks, err := c.Kiosks.List(ctx)
	if err != nil {
		return nil, err
	}
	today, err := c.Book.SalesToday(ctx)
	if err != nil {
		return nil, err
	}
	states := map[string]fleet.KioskState{}
	for _, s := range c.Presence.List() {
		states[s.ID] = s
	}
	rows := []KioskRow{}
	for _, k := range ks {
		if !op.MaySee(k.Store) {
			continue
		}
		row := KioskRow{ID: k.ID, Store: k.Store, State: "unknown", Seen: "—", SalesToday: today[k.ID], Locked: k.Locked != nil}
		if k.Retired != nil {
			row.State, row.LastError = "retired", k.RetiredWhy
		} else if s, ok := states[k.ID]; ok {
			row.State = "offline"
			if s.Online {
				row.State = "online"
			}
			row.LastSeen = s.LastSeen
			row.Seen = s.LastSeen.Local().Format("15:04:05")
			if t := s.Telemetry; t != nil {
				row.Firmware, row.LabelsLeft, row.Paper, row.Printer, row.Scale, row.LastError =
					t.Firmware, t.LabelsLeft, t.Paper, t.Printer, t.Scale, t.LastError
			}
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// kioskView is one kiosk's page.
type kioskView struct {
	Kiosk     KioskRow             `json:"kiosk"`
	Telemetry []protocol.Telemetry `json:"telemetry"`
	Sales     []views.SaleRow      `json:"sales"`
	// Certificate is the kiosk's newest certificate from the device CA;
	// CertExpired says it has expired, and the kiosk needs a new code.
	Certificate *ca.Issued `json:"certificate,omitempty"`
	CertExpired bool       `json:"certificate_expired"`
	// Commands are ops' latest commands to the kiosk, newest first, and
	// Diagnostics the latest diagnostics it answered (ops only).
	Commands    []commands.Command `json:"commands,omitempty"`
	Diagnostics *commands.Command  `json:"diagnostics,omitempty"`
}

// kiosk returns one kiosk's view, or nil if op may not see it (or there is
// no such kiosk: the two are not told apart).
func (c *Console) kiosk(ctx context.Context, op *operators.Operator, id string) (*kioskView, error) {
	rows, err := c.fleetRows(ctx, op)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(rows, func(r KioskRow) bool { return r.ID == id })
	if i < 0 {
		return nil, nil
	}
	v := &kioskView{Kiosk: rows[i], Telemetry: c.Presence.History(id)}
	slices.Reverse(v.Telemetry)
	if v.Sales, err = c.Book.SalesOf(ctx, id, 50); err != nil {
		return nil, err
	}
	if c.Certs != nil {
		if v.Certificate, err = c.Certs.Latest(ctx, id); err != nil {
			return nil, err
		}
		v.CertExpired = v.Certificate != nil && c.Now().After(v.Certificate.NotAfter)
	}
	if op.Ops() && c.Commands != nil {
		if v.Commands, err = c.Commands.Of(ctx, id, 20); err != nil {
			return nil, err
		}
		if v.Diagnostics, err = c.Commands.LastDiagnostics(ctx, id); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// fundsView is the funds page.
type fundsView struct {
	Licence  string           `json:"licence"`
	PSDs     []ledger.PSDView `json:"psds"`
	Fundings []views.Funding  `json:"fundings"`
	Check    checkResult      `json:"ledger_check"`
	Workers  []psdm.Status    `json:"workers"`
	// SalesStopped is why a ledger check stopped all sales; empty while selling.
	SalesStopped string `json:"sales_stopped"`
}

func (c *Console) funds(ctx context.Context, recheck bool) (*fundsView, error) {
	v := &fundsView{Licence: c.Licence, Check: c.check(ctx, recheck)}
	v.SalesStopped = c.Book.Halted() // after the check, which may have stopped them
	var err error
	if v.PSDs, err = c.Book.PSDs(ctx); err != nil {
		return nil, err
	}
	if v.Fundings, err = c.Book.Fundings(ctx, 50); err != nil {
		return nil, err
	}
	if c.Workers != nil {
		v.Workers = c.Workers.Status()
	}
	return v, nil
}

func (c *Console) check(ctx context.Context, force bool) checkResult {
	c.checkMu.Lock()
	defer c.checkMu.Unlock()
	if !force && !c.checked.At.IsZero() && c.Now().Sub(c.checked.At) < time.Minute {
		return c.checked
	}
	r := checkResult{At: c.Now(), Violations: []string{}}
	rep, err := c.Book.Check(ctx)
	if err != nil {
		r.Err = err.Error()
	} else {
		r.OK, r.Indicia, r.Violations = rep.OK(), rep.Indicia, append(r.Violations, rep.Violations...)
	}
	c.checked = r
	return r
}

// stockView is the label stock page.
type stockView struct {
	Batches []stock.Batch `json:"batches"`
	Stores  []string      `json:"stores"` // where op may issue sheets
	Issued  []string      `json:"issued,omitempty"`
}

func (c *Console) stock(ctx context.Context, op *operators.Operator) (*stockView, error) {
	all, err := c.Stock.Batches(ctx)
	if err != nil {
		return nil, err
	}
	v := &stockView{Batches: []stock.Batch{}, Stores: []string{}}
	seen := map[string]bool{}
	for _, b := range all {
		if op.MaySee(b.Store) {
			v.Batches = append(v.Batches, b)
			if !seen[b.Store] {
				seen[b.Store] = true
				v.Stores = append(v.Stores, b.Store)
			}
		}
	}
	if !op.Ops() {
		v.Stores = op.Stores
	}
	slices.Sort(v.Stores)
	return v, nil
}

// activityView is the activity page.
type activityView struct {
	Hour    []metrics.Point    `json:"last_hour"`
	Day     []metrics.Point    `json:"last_day"`
	Reports []views.SentReport `json:"postal_reports"`
}

func (c *Console) activity(ctx context.Context) (*activityView, error) {
	v := &activityView{Hour: c.Activity.Series(time.Hour, time.Minute), Day: c.Activity.Series(24*time.Hour, 15*time.Minute)}
	var err error
	v.Reports, err = c.Book.Reports(ctx, 30)
	if v.Reports == nil {
		v.Reports = []views.SentReport{} // [] in the API, not null, before the first report
	}
	return v, err
}

// liveRows streams the fleet rows op may see as server-sent events: at
// once, on every change, and every few seconds for the ages.
func (c *Console) liveRows(w http.ResponseWriter, r *http.Request, op *operators.Operator) {
	c.init()
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no") // a proxy must not hold events back
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		// The session and the operator are read again each round: a
		// logout, an expiry or a store taken away ends what the stream
		// shows, as it would end a page.
		sess, err := c.Sessions.Get(r)
		if err != nil || sess == nil || sess.Subject != op.ID {
			return
		}
		if op, err = c.People.ByID(r.Context(), op.ID); err != nil {
			return
		}
		changed := c.Presence.Changed()
		rows, err := c.fleetRows(r.Context(), op)
		if err != nil {
			c.Log.Error("live fleet", "err", err)
			return
		}
		if err := writeEvent(w, rows); err != nil {
			return
		}
		fl.Flush()
		select {
		case <-r.Context().Done():
			return
		case <-c.stop:
			return
		case <-changed:
			// Let a burst of heartbeats settle into one event.
			time.Sleep(200 * time.Millisecond)
		case <-tick.C:
		}
	}
}
