package console

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"html/template"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/hub/views"
	"github.com/frank-postage/frank/protocol"
)

// searchLimit is how many sales one search shows.
const searchLimit = 50

// scopeOf is what op may see: every store for ops, their own for staff.
func scopeOf(op *operators.Operator) views.Filter {
	if op.Ops() {
		return views.Filter{All: true}
	}
	return views.Filter{Stores: slices.Clone(op.Stores)}
}

// parseWhen reads a time from a query: a date (2006-01-02, the hub's
// local day; as an end, the end of that day), a browser's datetime-local
// (2006-01-02T15:04, local) or RFC 3339.
func parseWhen(s string, end bool) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, s, time.Local); err == nil {
		if end {
			t = t.AddDate(0, 0, 1)
		}
		return t, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, protocol.Errorf(protocol.CodeInvalidRequest, "time %s: want a date (2006-01-02) or RFC 3339 (2006-01-02T15:04:05Z)", protocol.RedactCardNumbers(strconv.Quote(s)))
}

// filter reads store, kiosk, from and to from r's query as a filter within
// what op may see. A store or kiosk that is not op's is forbidden.
func (c *Console) filter(ctx context.Context, r *http.Request, op *operators.Operator) (views.Filter, error) {
	q := r.URL.Query()
	f := scopeOf(op)
	if store := strings.TrimSpace(q.Get("store")); store != "" {
		if !op.MaySee(store) {
			return f, protocol.Errorf(protocol.CodeForbidden, "store %s is not one of yours", store)
		}
		f.All, f.Stores = false, []string{store}
	}
	if kiosk := strings.TrimSpace(q.Get("kiosk")); kiosk != "" {
		if !op.Ops() {
			store, err := c.kioskStore(ctx, kiosk)
			if err != nil {
				return f, err
			}
			if !op.MaySee(store) {
				return f, protocol.Errorf(protocol.CodeForbidden, "kiosk %s is not in your stores", kiosk)
			}
		}
		f.Kiosk = kiosk
	}
	var err error
	if f.From, err = parseWhen(q.Get("from"), false); err != nil {
		return f, err
	}
	if f.To, err = parseWhen(q.Get("to"), true); err != nil {
		return f, err
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return f, protocol.Errorf(protocol.CodeInvalidRequest, "from must be before to")
	}
	return f, nil
}

// kioskStore is a kiosk's store, or "" for a kiosk not in the fleet.
func (c *Console) kioskStore(ctx context.Context, id string) (string, error) {
	ks, err := c.Kiosks.List(ctx)
	if err != nil {
		return "", err
	}
	if i := slices.IndexFunc(ks, func(k fleet.Kiosk) bool { return k.ID == id }); i >= 0 {
		return ks[i].Store, nil
	}
	return "", nil
}

// failWith answers err: a protocol error with its own status, anything
// else as an internal error.
func (c *Console) failWith(w http.ResponseWriter, r *http.Request, err error) {
	var perr *protocol.Error
	if errors.As(err, &perr) {
		writeError(w, perr)
		return
	}
	c.apiFail(w, r, err)
}

// searchData is the search page.
type searchData struct {
	Q     string
	Kind  string
	Kinds []string
	Sales []views.Sale
	Done  bool // a search ran
}

func (c *Console) search(ctx context.Context, op *operators.Operator, kind, q string) ([]views.Sale, error) {
	if kind == "" {
		kind = views.ByAuto
	}
	sales, err := c.Book.Search(ctx, kind, q, scopeOf(op), searchLimit)
	if errors.Is(err, views.ErrQuery) {
		return nil, protocol.Errorf(protocol.CodeInvalidRequest, "%s", err.Error())
	}
	return sales, err
}

func (c *Console) searchPage(w http.ResponseWriter, r *http.Request) {
	op := current(r).Subject
	d := searchData{Q: strings.TrimSpace(r.URL.Query().Get("q")), Kind: r.URL.Query().Get("kind"), Kinds: views.SearchKinds}
	if d.Kind == "" {
		d.Kind = views.ByAuto
	}
	pg := page{Title: "Find a sale", Data: &d}
	if d.Q != "" {
		sales, err := c.search(r.Context(), op, d.Kind, d.Q)
		var perr *protocol.Error
		switch {
		case errors.As(err, &perr):
			pg.Error = perr.Message
			c.render(w, r, http.StatusUnprocessableEntity, "search.html", pg)
			return
		case err != nil:
			c.fail(w, r, err)
			return
		}
		d.Sales, d.Done = sales, true
	}
	c.render(w, r, http.StatusOK, "search.html", pg)
}

func (c *Console) apiSearch(w http.ResponseWriter, r *http.Request) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	if q == "" {
		writeError(w, protocol.Errorf(protocol.CodeInvalidRequest, "q: what to look for"))
		return
	}
	sales, err := c.search(r.Context(), current(r).Subject, r.URL.Query().Get("kind"), q)
	if err != nil {
		c.failWith(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, append([]views.Sale{}, sales...))
}

// countWriter counts what reached the client, so a failure before anything
// did is still answered with an error status.
type countWriter struct {
	w io.Writer
	n int64
}

func (cw *countWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.n += int64(n)
	return n, err
}

// sendCSV streams rows from each as an attachment named name. csv's own
// buffer passes rows on as it fills: nothing holds the whole range.
func (c *Console) sendCSV(w http.ResponseWriter, r *http.Request, name string, each func(emit func([]string) error) error) {
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	w.Header().Set("Cache-Control", "no-store")
	out := &countWriter{w: w}
	cw := csv.NewWriter(out)
	err := each(func(row []string) error { return cw.Write(inertCells(row)) })
	if err == nil {
		cw.Flush()
		err = cw.Error()
	}
	if err == nil {
		return
	}
	if out.n == 0 {
		w.Header().Del("Content-Disposition")
		c.failWith(w, r, err)
		return
	}
	// Part of the file is out: cut the connection, so the download fails
	// rather than looking complete.
	c.Log.Error("csv export cut short", "path", r.URL.Path, "err", err)
	panic(http.ErrAbortHandler)
}

// inertCells keeps a spreadsheet from running a cell as a formula: text
// that starts with = + - @ or a tab or carriage return gets a leading '.
// Customers' logins and refund reasons reach these files, and ops open
// them in a spreadsheet. Numbers, negative ones included, are left alone.
func inertCells(row []string) []string {
	var out []string
	for i, c := range row {
		if c == "" || !strings.ContainsRune("=+-@\t\r", rune(c[0])) {
			continue
		}
		if _, err := strconv.ParseFloat(c, 64); err == nil {
			continue
		}
		if out == nil {
			out = slices.Clone(row)
		}
		out[i] = "'" + c
	}
	if out == nil {
		return row
	}
	return out
}

// fileName makes a download's name from its parts, keeping only what is
// safe in a file name.
func fileName(parts ...string) string {
	var kept []string
	for _, p := range parts {
		p = strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
				return r
			}
			return '-'
		}, strings.TrimSpace(p))
		if p != "" {
			kept = append(kept, p)
		}
	}
	return strings.Join(kept, "_") + ".csv"
}

// exportCSV serves one of views.Exports, filtered by the query's store,
// kiosk, from and to, to anyone the filter allows.
func (c *Console) exportCSV(what string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		op := current(r).Subject
		f, err := c.filter(r.Context(), r, op)
		if err != nil {
			c.failWith(w, r, err)
			return
		}
		q := r.URL.Query()
		name := fileName("frank", what, q.Get("store"), q.Get("kiosk"), q.Get("from"), q.Get("to"))
		c.Log.Info("csv export", "by", op.Login, "what", what, "store", q.Get("store"), "kiosk", f.Kiosk, "from", q.Get("from"), "to", q.Get("to"))
		c.sendCSV(w, r, name, func(emit func([]string) error) error { return c.Book.Export(r.Context(), what, f, emit) })
	}
}

// exportsData is the exports page.
type exportsData struct {
	Stores  []string
	Kiosks  []KioskRow
	Exports []string
	Today   string
}

func (c *Console) exportsPage(w http.ResponseWriter, r *http.Request) {
	op := current(r).Subject
	stores, kiosks, err := c.storesOf(r.Context(), op)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "exports.html", page{Title: "Exports", Data: exportsData{Stores: stores, Kiosks: kiosks,
		Exports: views.Exports, Today: c.Now().Local().Format(time.DateOnly)}})
}

// storesOf lists the stores and kiosks op may pick from.
func (c *Console) storesOf(ctx context.Context, op *operators.Operator) ([]string, []KioskRow, error) {
	rows, err := c.fleetRows(ctx, op)
	if err != nil {
		return nil, nil, err
	}
	stores := slices.Clone(op.Stores)
	for _, k := range rows {
		if !slices.Contains(stores, k.Store) {
			stores = append(stores, k.Store)
		}
	}
	slices.Sort(stores)
	return stores, rows, nil
}

// shiftQuery reads a shift report's store, kiosk and window: a store op
// serves (staff with one store need not name it); today from midnight
// unless from and to say otherwise.
func (c *Console) shiftQuery(ctx context.Context, r *http.Request, op *operators.Operator) (store, kiosk string, from, to time.Time, err error) {
	q := r.URL.Query()
	store, kiosk = strings.TrimSpace(q.Get("store")), strings.TrimSpace(q.Get("kiosk"))
	if store == "" && len(op.Stores) == 1 && !op.Ops() {
		store = op.Stores[0]
	}
	if store == "" {
		return "", "", from, to, protocol.Errorf(protocol.CodeInvalidRequest, "store: which store's shift")
	}
	if !op.MaySee(store) {
		return "", "", from, to, protocol.Errorf(protocol.CodeForbidden, "store %s is not one of yours", store)
	}
	if kiosk != "" {
		ks, err := c.kioskStore(ctx, kiosk)
		if err != nil {
			return "", "", from, to, err
		}
		if ks != store {
			return "", "", from, to, protocol.Errorf(protocol.CodeInvalidRequest, "kiosk %s is not in store %s", kiosk, store)
		}
	}
	now := c.Now().Local()
	from, to = time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.Local), time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.Local)
	if s := q.Get("from"); s != "" {
		if from, err = parseWhen(s, false); err != nil {
			return "", "", from, to, err
		}
	}
	if s := q.Get("to"); s != "" {
		if to, err = parseWhen(s, true); err != nil {
			return "", "", from, to, err
		}
	}
	if !from.Before(to) {
		return "", "", from, to, protocol.Errorf(protocol.CodeInvalidRequest, "from must be before to")
	}
	return store, kiosk, from, to, nil
}

func (c *Console) apiShift(w http.ResponseWriter, r *http.Request) {
	store, kiosk, from, to, err := c.shiftQuery(r.Context(), r, current(r).Subject)
	if err != nil {
		c.failWith(w, r, err)
		return
	}
	sh, err := c.Book.Shift(r.Context(), store, kiosk, from, to)
	if err != nil {
		c.apiFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sh)
}

// shiftData is the shift report page.
type shiftData struct {
	Stores   []string
	Kiosks   []KioskRow
	Store    string
	Kiosk    string
	From, To string       // as the form's datetime-local fields show them
	CSV      template.URL // the report as CSV
	Shift    *views.Shift
}

func (c *Console) shiftPage(w http.ResponseWriter, r *http.Request) {
	op := current(r).Subject
	stores, kiosks, err := c.storesOf(r.Context(), op)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	d := &shiftData{Stores: stores, Kiosks: kiosks}
	pg := page{Title: "Shift report", Data: d}
	const local = "2006-01-02T15:04"
	store, kiosk, from, to, err := c.shiftQuery(r.Context(), r, op)
	var perr *protocol.Error
	switch {
	case errors.As(err, &perr) && perr.Code == protocol.CodeForbidden:
		http.Error(w, perr.Message, http.StatusForbidden)
		return
	case errors.As(err, &perr) && r.URL.Query().Get("store") == "":
		// No store picked yet: show the form.
		now := c.Now().Local()
		d.From, d.To = now.Format(time.DateOnly)+"T00:00", now.AddDate(0, 0, 1).Format(time.DateOnly)+"T00:00"
		c.render(w, r, http.StatusOK, "shift.html", pg)
		return
	case errors.As(err, &perr):
		pg.Error = perr.Message
		d.Store, d.Kiosk, d.From, d.To = r.URL.Query().Get("store"), r.URL.Query().Get("kiosk"), r.URL.Query().Get("from"), r.URL.Query().Get("to")
		c.render(w, r, http.StatusUnprocessableEntity, "shift.html", pg)
		return
	case err != nil:
		c.fail(w, r, err)
		return
	}
	sh, err := c.Book.Shift(r.Context(), store, kiosk, from, to)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	d.Store, d.Kiosk, d.From, d.To, d.Shift = store, kiosk, from.Local().Format(local), to.Local().Format(local), &sh
	// Built from checked values only.
	d.CSV = template.URL("/console/shift.csv?" + url.Values{"store": {store}, "kiosk": {kiosk}, "from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)}}.Encode())
	c.render(w, r, http.StatusOK, "shift.html", pg)
}

// shiftCSV is the shift report as CSV: one figure a row.
func (c *Console) shiftCSV(w http.ResponseWriter, r *http.Request) {
	store, kiosk, from, to, err := c.shiftQuery(r.Context(), r, current(r).Subject)
	if err != nil {
		c.failWith(w, r, err)
		return
	}
	sh, err := c.Book.Shift(r.Context(), store, kiosk, from, to)
	if err != nil {
		c.apiFail(w, r, err)
		return
	}
	name := fileName("frank", "shift", store, kiosk, from.Local().Format("2006-01-02T1504"), to.Local().Format("2006-01-02T1504"))
	c.sendCSV(w, r, name, func(emit func([]string) error) error { return shiftRows(sh, emit) })
}

// shiftRows writes a shift's figures as figure, rate_class, count, mills.
func shiftRows(sh views.Shift, emit func([]string) error) error {
	n, m := strconv.Itoa, func(v protocol.Mills) string { return strconv.FormatInt(int64(v), 10) }
	rows := [][]string{{"figure", "rate_class", "count", "mills"},
		{"store", sh.Store, "", ""}, {"kiosk", sh.Kiosk, "", ""},
		{"from", sh.From.Format(time.RFC3339), "", ""}, {"to", sh.To.Format(time.RFC3339), "", ""},
		{"sales", "", n(sh.Sales), ""}}
	for _, cl := range sh.Stamps {
		rows = append(rows, []string{"stamps", cl.RateClass, n(cl.Count), m(cl.Postage)})
	}
	rows = append(rows, []string{"postage", "", n(sh.StampCount), m(sh.Postage)},
		[]string{"card", "", "", m(sh.Card)}, []string{"account", "", "", m(sh.Account)},
		[]string{"refunds", "", n(sh.Refunds), m(sh.Refunded)}, []string{"voids", "", n(sh.Voids), ""},
		[]string{"labels_loaded", "", n(sh.LabelsLoaded), ""}, []string{"labels_used", "", n(sh.LabelsUsed), ""},
		[]string{"faults", "", n(sh.Faults), ""})
	for _, row := range rows {
		if err := emit(row); err != nil {
			return fmt.Errorf("shift csv: %w", err)
		}
	}
	return nil
}
