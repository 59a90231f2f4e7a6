package console

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/hub/views"
	"github.com/frank-postage/frank/hub/web/assets"
	"github.com/frank-postage/frank/hub/web/session"
	"github.com/frank-postage/frank/protocol"
)

// current is the logged-in operator: by session on the pages, by token
// on the API (then without a session).
func current(r *http.Request) session.Login[*operators.Operator] {
	return session.Current[*operators.Operator](r)
}

// page is what every template gets.
type page struct {
	Title string
	Op    *operators.Operator
	CSRF  string
	Flash string
	Error string
	// Stopped says why sales are stopped, on every page, while they are.
	Stopped string
	Data    any
}

// Routes returns the console's router, to mount at /console.
func (c *Console) Routes() http.Handler {
	r := chi.NewRouter()
	r.Get("/login", c.loginForm)
	r.Post("/login", c.login)
	r.Group(func(r chi.Router) {
		r.Use(session.Require(c.Sessions, "/console/login", c.People.ByID))
		r.Get("/", c.fleetPage)
		r.Get("/events", func(w http.ResponseWriter, r *http.Request) { c.liveRows(w, r, current(r).Subject) })
		r.Get("/kiosks/{id}", c.kioskPage)
		r.Get("/stock", c.stockPage)
		r.Post("/stock/issue", c.issue)
		r.Post("/refunds", c.refund)
		r.Get("/search", c.searchPage)
		r.Get("/shift", c.shiftPage)
		r.Get("/shift.csv", c.shiftCSV)
		r.Get("/exports", c.exportsPage)
		for _, what := range views.Exports {
			r.Get("/exports/"+what+".csv", c.exportCSV(what))
		}
		r.Post("/logout", c.logout)
		r.Group(func(r chi.Router) {
			r.Use(opsOnly)
			r.Get("/funds", c.fundsPage)
			r.Post("/funds/check", c.recheck)
			r.Get("/alerts", c.alertsPage)
			r.Post("/alerts/{id}/ack", c.ack)
			r.Post("/kiosks/{id}/retire", c.retire)
			r.Post("/kiosks/{id}/commands", c.command)
			r.Get("/kiosks/{id}/settings", c.settingsPage(kioskSettings))
			r.Post("/kiosks/{id}/settings", c.saveSettings(kioskSettings))
			r.Get("/rollouts", c.rolloutsPage)
			r.Post("/rollouts/{id}/widen", c.rolloutButton("widen"))
			r.Post("/rollouts/{id}/abort", c.rolloutButton("abort"))
			r.Get("/settings", c.settingsPage(fleetSettings))
			r.Post("/settings", c.saveSettings(fleetSettings))
			r.Get("/stores/{id}", c.settingsPage(storeSettings))
			r.Post("/stores/{id}/settings", c.saveSettings(storeSettings))
			r.Post("/stores/{id}/staff", c.addStaff)
			r.Post("/stores/{id}/staff/revoke", c.revokeStaff)
			r.Get("/activity", c.activityPage)
		})
	})
	return r
}

// opsOnly refuses store staff.
func opsOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !current(r).Subject.Ops() {
			http.Error(w, "this page is for vendor ops", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, pg page) {
	if l := current(r); l.Session != nil {
		pg.Op, pg.CSRF = l.Subject, l.Session.CSRF
		pg.Stopped = c.Book.Halted()
	}
	if pg.Flash == "" {
		pg.Flash = c.Sessions.TakeFlash(w, r)
	}
	if err := assets.Page(w, pages, status, name, pg); err != nil {
		c.Log.Error("render", "page", name, "err", err)
	}
}

func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	c.Log.Error("console", "path", r.URL.Path, "err", err)
	http.Error(w, "internal error; see the hub log", http.StatusInternalServerError)
}

func (c *Console) loginForm(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "login.html", page{Title: "Console login", Data: r.URL.Query().Get("next")})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	login := strings.TrimSpace(r.PostFormValue("login"))
	next := session.Next(r, "/console/")
	if ok, wait := c.Logins.Allow(r, login); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		c.render(w, r, http.StatusTooManyRequests, "login.html", page{Title: "Console login", Error: "Too many failed logins. Try again later.", Data: next})
		return
	}
	defer c.Logins.Done(r, login)
	// A name longer than any login is wrong without a look (the limits
	// count it against the address alone).
	op, err := (*operators.Operator)(nil), operators.ErrAuth
	if !session.TooLong(login) {
		op, err = c.People.Authenticate(r.Context(), login, r.PostFormValue("password"))
	}
	if err != nil {
		c.Logins.Fail(r, login)
		c.Log.Warn("console login failed", "login", session.LogName(login), "ip", c.Logins.ClientIP(r))
		c.render(w, r, http.StatusUnauthorized, "login.html", page{Title: "Console login", Error: "Wrong login or password.", Data: next})
		return
	}
	c.Logins.Succeeded(r, login)
	if _, err := c.Sessions.Start(w, r, op.ID); err != nil {
		c.fail(w, r, err)
		return
	}
	c.Log.Info("console login", "login", op.Login, "role", op.Role)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	c.Sessions.End(w, r)
	http.Redirect(w, r, "/console/login", http.StatusSeeOther)
}

// fleetData is the fleet page: the table, and what the operator's stores
// need refilled.
type fleetData struct {
	Kiosks []KioskRow
	Refill []Refill
}

func (c *Console) fleetPage(w http.ResponseWriter, r *http.Request) {
	op := current(r).Subject
	rows, err := c.fleetRows(r.Context(), op)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	refill, err := c.refill(r.Context(), rows)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "fleet.html", page{Title: "Fleet", Data: fleetData{Kiosks: rows, Refill: refill}})
}

func (c *Console) kioskPage(w http.ResponseWriter, r *http.Request) {
	v, err := c.kiosk(r.Context(), current(r).Subject, chi.URLParam(r, "id"))
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if v == nil {
		http.Error(w, "no such kiosk in your stores", http.StatusNotFound)
		return
	}
	c.render(w, r, http.StatusOK, "kiosk.html", page{Title: "Kiosk " + v.Kiosk.ID, Data: v})
}

// retire takes a kiosk out of the fleet for good (ops only): its
// certificates are revoked, its stock and unreported stamps voided.
func (c *Console) retire(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	op := current(r).Subject
	if c.Retire == nil || r.PostFormValue("confirm") != id {
		c.Sessions.Flash(w, r, "Not retired: type the kiosk's id to confirm.")
		http.Redirect(w, r, "/console/kiosks/"+url.PathEscape(id), http.StatusSeeOther)
		return
	}
	lost := r.PostFormValue("lost") == "on"
	why := strings.TrimSpace(r.PostFormValue("why"))
	if why == "" {
		why = "retired from the console"
	}
	why += " (by " + op.Login + ")"
	msg, err := c.Retire(r.Context(), id, why, lost)
	flash := "Kiosk retired: " + msg
	if err != nil {
		flash = "Not retired: " + err.Error()
	}
	c.Log.Warn("kiosk retire from the console", "kiosk", id, "by", op.Login, "lost", lost, "err", err)
	c.Sessions.Flash(w, r, flash)
	http.Redirect(w, r, "/console/kiosks/"+url.PathEscape(id), http.StatusSeeOther)
}

// command gives a kiosk one of ops' commands (ops only).
func (c *Console) command(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	op := current(r).Subject
	action := r.PostFormValue("action")
	cmd, err := c.Commands.Issue(r.Context(), id, action, r.PostFormValue("message"), op.Login)
	flash := "Sent: " + action + ". The kiosk carries it out once its sale in hand, if any, is over; its answer appears below."
	if err != nil {
		flash = "Not sent: " + err.Error()
	} else {
		c.Log.Info("kiosk command from the console", "kiosk", id, "action", action, "by", op.Login, "command_id", cmd.CommandID)
	}
	c.Sessions.Flash(w, r, flash)
	http.Redirect(w, r, "/console/kiosks/"+url.PathEscape(id), http.StatusSeeOther)
}

func (c *Console) fundsPage(w http.ResponseWriter, r *http.Request) {
	v, err := c.funds(r.Context(), false)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "funds.html", page{Title: "Funds", Data: v})
}

func (c *Console) recheck(w http.ResponseWriter, r *http.Request) {
	res := c.check(r.Context(), true)
	c.Log.Info("ledger check from the console", "by", current(r).Subject.Login, "ok", res.OK)
	http.Redirect(w, r, "/console/funds", http.StatusSeeOther)
}

func (c *Console) alertsPage(w http.ResponseWriter, r *http.Request) {
	all, err := c.Alerts.List(r.Context(), false)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if len(all) > 500 {
		all = all[:500]
	}
	c.render(w, r, http.StatusOK, "alerts.html", page{Title: "Alerts", Data: all})
}

func (c *Console) ack(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err == nil {
		err = c.Alerts.Ack(r.Context(), id, current(r).Subject.Login)
	}
	flash := "Alert acknowledged."
	if err != nil {
		flash = "Not acknowledged: " + err.Error()
	}
	c.Sessions.Flash(w, r, flash)
	http.Redirect(w, r, "/console/alerts", http.StatusSeeOther)
}

func (c *Console) stockPage(w http.ResponseWriter, r *http.Request) {
	v, err := c.stock(r.Context(), current(r).Subject)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "stock.html", page{Title: "Label stock", Data: v})
}

func (c *Console) issue(w http.ResponseWriter, r *http.Request) {
	op := current(r).Subject
	n, _ := strconv.Atoi(r.PostFormValue("sheets"))
	serials, err := c.issueSheets(r.Context(), op, strings.TrimSpace(r.PostFormValue("store")), n)
	v, verr := c.stock(r.Context(), op)
	if verr != nil {
		c.fail(w, r, verr)
		return
	}
	if err != nil {
		c.render(w, r, http.StatusUnprocessableEntity, "stock.html", page{Title: "Label stock", Error: err.Error(), Data: v})
		return
	}
	v.Issued = serials
	c.render(w, r, http.StatusOK, "stock.html", page{Title: "Label stock", Flash: fmt.Sprintf("Issued %d sheets.", len(serials)), Data: v})
}

// refund takes back an unused stamp bought at a kiosk: staff for their
// stores' kiosks, ops for any, with the label handed in and a reason.
func (c *Console) refund(w http.ResponseWriter, r *http.Request) {
	op := current(r).Subject
	v, err := c.stock(r.Context(), op)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	refuse := func(msg string) {
		c.render(w, r, http.StatusUnprocessableEntity, "stock.html", page{Title: "Label stock", Error: msg, Data: v})
	}
	label, err := protocol.ParseLabelSerial(strings.TrimSpace(r.PostFormValue("label")))
	switch {
	case c.Refund == nil:
		refuse("refunds are not available on this hub")
		return
	case err != nil:
		refuse("label: " + err.Error())
		return
	case r.PostFormValue("handed_in") != "yes":
		refuse("take the label back first: a refunded stamp must not be mailed")
		return
	}
	may := func(kioskID string) bool {
		ks, err := c.Kiosks.List(r.Context())
		if err != nil {
			return false
		}
		i := slices.IndexFunc(ks, func(k fleet.Kiosk) bool { return k.ID == kioskID })
		return i >= 0 && op.MaySee(ks[i].Store)
	}
	amount, err := c.Refund(r.Context(), label, op.Login, strings.TrimSpace(r.PostFormValue("reason")), may)
	if err != nil {
		refuse(err.Error())
		return
	}
	c.render(w, r, http.StatusOK, "stock.html", page{Title: "Label stock", Flash: fmt.Sprintf("Refunded %s for label %s; its indicium is void.", amount, label), Data: v})
}

// issueSheets issues n sheets to a store op may serve. Ops may name a new
// store, which is created.
func (c *Console) issueSheets(ctx context.Context, op *operators.Operator, store string, n int) ([]string, error) {
	if !op.MaySee(store) {
		return nil, fmt.Errorf("store %q is not one of yours", store)
	}
	if n < 1 || n > 1000 {
		return nil, fmt.Errorf("sheets: want 1 to 1000")
	}
	if op.Ops() {
		if err := c.Stock.AddStore(ctx, store, ""); err != nil {
			return nil, err
		}
	}
	got, err := c.Stock.Issue(ctx, store, n)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(got))
	for i, s := range got {
		out[i] = s.String()
	}
	c.Log.Info("sheets issued", "by", op.Login, "store", store, "sheets", n)
	return out, nil
}

func (c *Console) activityPage(w http.ResponseWriter, r *http.Request) {
	v, err := c.activity(r.Context())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "activity.html", page{Title: "Activity", Data: v})
}

func writeEvent(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "data: %s\n\n", b)
	return err
}
