// Package portal is the customer's web portal (patent Figs. 3 and 8): a
// customer registers, tops up a prepaid account by card, buys stamps for a
// pre-serialized label sheet, downloads them as a PDF placed on the right
// labels, sees past purchases, and may have an unused stamp refunded once
// within the refund window. Pages are server-rendered; every form carries
// the session's CSRF token.
package portal

import (
	"bytes"
	"context"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"github.com/frank-postage/frank/hub/views"
	"html/template"
	"image/png"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/boombuler/barcode"
	"github.com/boombuler/barcode/qr"
	"github.com/go-chi/chi/v5"

	"github.com/frank-postage/frank/hub/accounts"
	"github.com/frank-postage/frank/hub/payments"
	"github.com/frank-postage/frank/hub/sale"
	"github.com/frank-postage/frank/hub/sheetpdf"
	"github.com/frank-postage/frank/hub/web/assets"
	"github.com/frank-postage/frank/hub/web/session"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/label"
)

// customers keeps the accounts.
type customers interface {
	Create(ctx context.Context, login, password string) (*accounts.Account, error)
	Authenticate(ctx context.Context, login, password string) (*accounts.Account, error)
	ByID(ctx context.Context, id int64) (*accounts.Account, error)
	SetZIP(ctx context.Context, id int64, zip protocol.ZIP) error
	NewPayCode(ctx context.Context, accountID int64, max protocol.Mills) (string, time.Time, error)
	ChangePassword(ctx context.Context, id int64, current, next string) error
	NewReset(ctx context.Context, login string) (string, time.Time, error)
	CheckReset(ctx context.Context, token string) error
	Reset(ctx context.Context, token, next string) (int64, error)
}

// funder tops accounts up from a card.
type funder interface {
	Fund(ctx context.Context, accountID int64, card *payments.Card, amount protocol.Mills, requestID string) error
	SaveCard(ctx context.Context, accountID int64, card *payments.Card) error
}

// shop sells and refunds.
type shop interface {
	Buy(ctx context.Context, acct *accounts.Account, o sale.Order, requestID string) (*protocol.PurchaseResult, error)
	RefundUnused(ctx context.Context, acct *accounts.Account, requestID string, label protocol.LabelSerial, window time.Duration) (protocol.Mills, error)
}

// history reads a customer's purchases.
type history interface {
	SalesOf(ctx context.Context, kioskID string, limit int) ([]views.SaleRow, error)
	SaleOf(ctx context.Context, kioskID, requestID string) (*views.SaleRow, error)
	Result(ctx context.Context, kioskID, requestID string) ([]byte, error)
}

// rateBook gives the table in force.
type rateBook interface {
	Current(now time.Time) (protocol.RateTable, error)
}

// meter times answers for the metrics.
type meter interface {
	Answered(channel string, d time.Duration, code protocol.Code)
}

// Portal serves the pages under /portal.
type Portal struct {
	Customers    customers
	Funds        funder
	Shop         shop
	History      history
	Rates        rateBook
	Sessions     *session.Manager
	Logins       *session.Logins
	RefundWindow time.Duration
	Meter        meter // may be nil
	Log          *slog.Logger
	Now          func() time.Time

	// ResetRequests limits asking for reset links, per login and address;
	// ResetLinks, wrong links per address.
	ResetRequests, ResetLinks *session.Logins
	// Changes, if set, limits password changes per account, right ones
	// too: each costs two bcrypts, and a session is no licence to spend
	// the hub's CPU.
	Changes *session.Limiter
	// ShowResetLinks shows a reset link on the page that asked for it, for
	// a demo without mail: it tells whoever asks that the login exists.
	ShowResetLinks bool
}

// PasswordChangePrefix begins the name of an account's count of password
// changes among the shared counts: the sweep keeps them for their window.
const PasswordChangePrefix = "password-change:"

//go:embed templates
var templateFS embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"oz":   func(mg int64) string { return strconv.FormatFloat(float64(mg)/mgPerOz, 'f', 1, 64) },
	"date": func(t time.Time) string { return t.Local().Format("2006-01-02 15:04") },
}).ParseFS(templateFS, "templates/*.html"))

const mgPerOz = 28349.523125

// page is what every template gets.
type page struct {
	Title   string
	Account *accounts.Account
	CSRF    string
	Flash   string
	Error   string
	Data    any
}

// Routes returns the portal's router, to mount at /portal.
func (p *Portal) Routes() http.Handler {
	r := chi.NewRouter()
	r.Get("/login", p.loginForm)
	r.Post("/login", p.login)
	r.Get("/register", p.registerForm)
	r.Post("/register", p.register)
	r.Get("/forgot", p.forgotForm)
	r.Post("/forgot", p.forgot)
	r.Get("/reset", p.resetForm)
	r.Post("/reset", p.reset)
	r.Group(func(r chi.Router) {
		r.Use(session.Require(p.Sessions, "/portal/login", p.Customers.ByID))
		r.Get("/", p.home)
		r.Post("/logout", p.logout)
		r.Get("/password", p.passwordForm)
		r.Post("/password", p.changePassword)
		r.Post("/buy", p.buy)
		r.Get("/fund", p.fundForm)
		r.Post("/fund", p.fund)
		r.Post("/zip", p.zip)
		r.Get("/paycode", p.payCodeForm)
		r.Post("/paycode", p.payCode)
		r.Get("/purchases", p.purchases)
		r.Get("/purchases/{id}", p.purchase)
		r.Get("/purchases/{id}/sheet.pdf", p.pdf)
		r.Post("/purchases/{id}/refund", p.refund)
	})
	return r
}

// current is the logged-in customer.
func current(r *http.Request) session.Login[*accounts.Account] {
	return session.Current[*accounts.Account](r)
}

func (p *Portal) render(w http.ResponseWriter, r *http.Request, status int, name string, pg page) {
	if l := current(r); l.Session != nil {
		pg.Account, pg.CSRF = l.Subject, l.Session.CSRF
	}
	if pg.Flash == "" {
		pg.Flash = p.Sessions.TakeFlash(w, r)
	}
	if err := assets.Page(w, pages, status, name, pg); err != nil {
		p.Log.Error("render", "page", name, "err", err)
	}
}

func (p *Portal) fail(w http.ResponseWriter, r *http.Request, err error) {
	p.Log.Error("portal", "path", r.URL.Path, "err", err)
	http.Error(w, "something went wrong on our side; nothing was charged twice — try again", http.StatusInternalServerError)
}

// problem turns an error into what the customer reads: the code and its
// message for a typed error, a generic line otherwise.
func problem(err error) (int, string) {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return http.StatusUnprocessableEntity, fmt.Sprintf("%s (%s)", pe.Message, pe.Code)
	}
	return http.StatusInternalServerError, "something went wrong on our side; please try again"
}

func (p *Portal) loginForm(w http.ResponseWriter, r *http.Request) {
	p.render(w, r, http.StatusOK, "login.html", page{Title: "Log in", Data: r.URL.Query().Get("next")})
}

func (p *Portal) login(w http.ResponseWriter, r *http.Request) {
	login := strings.TrimSpace(r.PostFormValue("login"))
	if ok, wait := p.Logins.Allow(r, login); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		p.render(w, r, http.StatusTooManyRequests, "login.html", page{Title: "Log in", Error: "Too many failed logins. Try again later."})
		return
	}
	defer p.Logins.Done(r, login)
	// A name longer than any login is wrong without a look (the limits
	// count it against the address alone).
	acct, err := (*accounts.Account)(nil), accounts.ErrAuth
	if !session.TooLong(login) {
		acct, err = p.Customers.Authenticate(r.Context(), login, r.PostFormValue("password"))
	}
	if err != nil {
		p.Logins.Fail(r, login)
		p.render(w, r, http.StatusUnauthorized, "login.html", page{Title: "Log in", Error: "Wrong login or password."})
		return
	}
	p.Logins.Succeeded(r, login)
	if _, err := p.Sessions.Start(w, r, acct.ID); err != nil {
		p.fail(w, r, err)
		return
	}
	http.Redirect(w, r, session.Next(r, "/portal/"), http.StatusSeeOther)
}

func (p *Portal) registerForm(w http.ResponseWriter, r *http.Request) {
	p.render(w, r, http.StatusOK, "register.html", page{Title: "Register"})
}

func (p *Portal) register(w http.ResponseWriter, r *http.Request) {
	if ok, wait := p.Logins.Allow(r, ""); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		p.render(w, r, http.StatusTooManyRequests, "register.html", page{Title: "Register", Error: "Too many attempts. Try again later."})
		return
	}
	defer p.Logins.Done(r, "")
	login, pw := strings.TrimSpace(r.PostFormValue("login")), r.PostFormValue("password")
	zip := protocol.ZIP(strings.TrimSpace(r.PostFormValue("zip")))
	if n, err := zip.Number(); err != nil || n == 0 {
		p.render(w, r, http.StatusUnprocessableEntity, "register.html", page{Title: "Register", Error: "ZIP code: five digits, where you mail from."})
		return
	}
	if pw != r.PostFormValue("password2") {
		p.render(w, r, http.StatusUnprocessableEntity, "register.html", page{Title: "Register", Error: "The two passwords differ."})
		return
	}
	acct, err := p.Customers.Create(r.Context(), login, pw)
	if err == nil {
		err = p.Customers.SetZIP(r.Context(), acct.ID, zip)
	}
	// Every registration counts, made or not: names cannot be probed
	// fast, nor accounts made by the thousand from one address.
	p.Logins.Fail(r, "")
	if err != nil {
		status, msg := problem(err)
		p.render(w, r, status, "register.html", page{Title: "Register", Error: msg})
		return
	}
	p.Log.Info("customer registered", "account", acct.ID)
	if _, err := p.Sessions.Start(w, r, acct.ID); err != nil {
		p.fail(w, r, err)
		return
	}
	p.Sessions.Flash(w, r, "Welcome! Top up your account to buy stamps.")
	http.Redirect(w, r, "/portal/fund", http.StatusSeeOther)
}

func (p *Portal) logout(w http.ResponseWriter, r *http.Request) {
	p.Sessions.End(w, r)
	http.Redirect(w, r, "/portal/login", http.StatusSeeOther)
}

// homeData is the buy page.
type homeData struct {
	Classes   []protocol.RateClass
	RateTable string
	RequestID string
	Recent    []views.SaleRow
	Remedy    *remedy // when the balance fell short of an order
}

// remedy is the patent's answer to short funds (Fig. 8, step 810): the
// order that the balance pays for, or a top-up that keeps the order.
type remedy struct {
	Order     url.Values // class, weight_oz, sheet, count as asked
	Missing   protocol.Mills
	Fits      int            // stamps the balance pays for, 0 if none
	FitsTotal protocol.Mills // what they cost
	TopUp     protocol.Mills // at least the missing amount, and the gateway's $1.00
	TopUpForm string         // TopUp as the top-up form takes it: 1.00
	RequestID string
}

// remedyFor makes the remedy for an order refused for short funds.
func remedyFor(f url.Values, balance protocol.Mills, pe *protocol.Error) *remedy {
	n, err := strconv.Atoi(strings.TrimSpace(f.Get("count")))
	if err != nil || n < 1 || pe.MissingMills <= 0 {
		return nil
	}
	per := (balance + pe.MissingMills) / protocol.Mills(n)
	rm := &remedy{Order: url.Values{}, Missing: pe.MissingMills, TopUp: max(pe.MissingMills, 1000), RequestID: protocol.NewRequestID()}
	rm.TopUp = (rm.TopUp + 9) / 10 * 10 // whole cents
	rm.TopUpForm = strings.TrimPrefix(rm.TopUp.String(), "$")
	for _, k := range []string{"class", "weight_oz", "sheet", "count"} {
		rm.Order.Set(k, f.Get(k))
	}
	if per > 0 && balance >= per {
		rm.Fits = min(int(balance/per), n-1)
		rm.FitsTotal = per * protocol.Mills(rm.Fits)
	}
	return rm
}

func (p *Portal) home(w http.ResponseWriter, r *http.Request) {
	p.showHome(w, r, http.StatusOK, "")
}

func (p *Portal) showHome(w http.ResponseWriter, r *http.Request, status int, errMsg string) {
	p.showHomeWith(w, r, status, errMsg, nil)
}

func (p *Portal) showHomeWith(w http.ResponseWriter, r *http.Request, status int, errMsg string, rm *remedy) {
	d := homeData{RequestID: protocol.NewRequestID(), Remedy: rm}
	if rt, err := p.Rates.Current(p.Now()); err == nil {
		d.Classes, d.RateTable = rt.Classes, rt.Version
	}
	recent, err := p.History.SalesOf(r.Context(), sale.WebKioskID(current(r).Subject.ID), 5)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	d.Recent = recent
	p.render(w, r, status, "home.html", page{Title: "Buy stamps", Error: errMsg, Data: d})
}

// parseWeight reads ounces ("1", "2.5") as milligrams.
func parseWeight(s string) (int64, error) {
	oz, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || oz <= 0 || oz > 1120 || math.IsNaN(oz) {
		return 0, protocol.Errorf(protocol.CodeInvalidRequest, "weight: ounces, more than 0")
	}
	return int64(oz * mgPerOz), nil // down: "1 oz" must price as one ounce
}

func (p *Portal) buy(w http.ResponseWriter, r *http.Request) {
	start := p.Now()
	acct := current(r).Subject
	res, err := p.order(r, acct)
	if p.Meter != nil {
		code := protocol.Code("")
		if err != nil {
			code = protocol.AsError(err).Code
		}
		p.Meter.Answered("web", p.Now().Sub(start), code)
	}
	if err != nil {
		status, msg := problem(err)
		if status == http.StatusInternalServerError {
			p.Log.Error("portal purchase", "account", acct.ID, "err", err)
		}
		var rm *remedy
		if pe := protocol.AsError(err); pe.Code == protocol.CodeInsufficientFunds {
			rm = remedyFor(r.PostForm, acct.Balance, pe)
		}
		p.showHomeWith(w, r, status, msg, rm)
		return
	}
	p.Sessions.Flash(w, r, fmt.Sprintf("Bought %d stamps. Print them on your sheet.", len(res.Indicia)))
	http.Redirect(w, r, "/portal/purchases/"+res.RequestID, http.StatusSeeOther)
}

func (p *Portal) order(r *http.Request, acct *accounts.Account) (*protocol.PurchaseResult, error) {
	if err := r.ParseForm(); err != nil {
		return nil, protocol.Errorf(protocol.CodeMalformed, "the form could not be read")
	}
	o, err := parseOrder(r.PostForm)
	if err != nil {
		return nil, err
	}
	return p.Shop.Buy(r.Context(), acct, o, r.PostFormValue("request_id"))
}

// parseOrder reads the buy form: class, weight_oz, sheet and count.
func parseOrder(f url.Values) (sale.Order, error) {
	mg, err := parseWeight(f.Get("weight_oz"))
	if err != nil {
		return sale.Order{}, err
	}
	sheet, err := protocol.ParseSheetSerial(strings.ToUpper(strings.TrimSpace(f.Get("sheet"))))
	if err != nil {
		return sale.Order{}, protocol.Errorf(protocol.CodeInvalidRequest, "sheet: the serial printed on your label sheet, like 1966-F8CF")
	}
	n, err := strconv.Atoi(strings.TrimSpace(f.Get("count")))
	if err != nil || n < 1 || n > protocol.LabelsPerSheet {
		return sale.Order{}, protocol.Errorf(protocol.CodeInvalidRequest, "count: 1 to %d stamps", protocol.LabelsPerSheet)
	}
	class := f.Get("class")
	if class == "" || len(class) > 16 {
		return sale.Order{}, protocol.Errorf(protocol.CodeRateClassUnknown, "class: pick a service")
	}
	return sale.Order{RateClass: class, WeightMg: mg, Sheet: sheet, Count: n}, nil
}

// fundData is the top-up page; Order is an order to place once the top-up
// has gone through (the remedy for short funds), Amount a suggestion.
type fundData struct {
	RequestID string
	Amount    string
	Order     url.Values
}

func (p *Portal) fundForm(w http.ResponseWriter, r *http.Request) {
	p.render(w, r, http.StatusOK, "fund.html", page{Title: "Top up", Data: fundFormData(r.URL.Query())})
}

// fundFormData keeps the amount and order a remedy link carries.
func fundFormData(q url.Values) fundData {
	d := fundData{RequestID: protocol.NewRequestID(), Amount: q.Get("amount")}
	if q.Get("sheet") != "" {
		d.Order = url.Values{}
		for _, k := range []string{"class", "weight_oz", "sheet", "count", "order_request_id"} {
			d.Order.Set(k, q.Get(k))
		}
	}
	return d
}

func (p *Portal) fund(w http.ResponseWriter, r *http.Request) {
	acct := current(r).Subject
	requestID := r.PostFormValue("request_id")
	amt, err := protocol.ParseMills(strings.TrimPrefix(strings.TrimSpace(r.PostFormValue("amount")), "$"))
	switch {
	case !protocol.ValidRequestID(requestID):
		// It names the top-up's payment, and the card hold's key with it.
		err = protocol.Errorf(protocol.CodeInvalidRequest, "request_id: want 1-64 of [A-Za-z0-9_-]; open the top-up page again")
	case err != nil:
		err = protocol.Errorf(protocol.CodeInvalidRequest, "amount: dollars, like 25.00")
	default:
		// The card goes to the gateway and nowhere else: not the log, not the store.
		card := &payments.Card{Number: strings.ReplaceAll(r.PostFormValue("card"), " ", ""),
			Exp: strings.ReplaceAll(r.PostFormValue("exp"), "/", ""), Name: r.PostFormValue("name")}
		err = p.Funds.Fund(r.Context(), acct.ID, card, amt, requestID)
		if err == nil && r.PostFormValue("save_card") == "yes" {
			if serr := p.Funds.SaveCard(r.Context(), acct.ID, card); serr != nil {
				p.Log.Warn("card not kept", "account", acct.ID, "err", serr)
			}
		}
	}
	if err != nil && protocol.AsError(err).Code == protocol.CodeOutcomeUnknown {
		// The card may have been charged: not an error, and not done. The
		// form keeps its request id, so sending it again finishes this
		// top-up rather than starting another.
		p.Log.Warn("top-up pending", "account", acct.ID, "request_id", requestID, "err", err)
		d := fundFormData(r.PostForm)
		d.RequestID = requestID
		p.render(w, r, http.StatusAccepted, "fund.html", page{Title: "Top up", Flash: "Top-up pending: " + protocol.AsError(err).Message, Data: d})
		return
	}
	if err != nil {
		status, msg := problem(err)
		p.render(w, r, status, "fund.html", page{Title: "Top up", Error: msg, Data: fundFormData(r.PostForm)})
		return
	}
	p.Log.Info("account topped up", "account", acct.ID, "amount", amt.String())
	if r.PostFormValue("sheet") == "" {
		p.Sessions.Flash(w, r, "Added "+amt.String()+" to your account.")
		http.Redirect(w, r, "/portal/", http.StatusSeeOther)
		return
	}
	// The order the top-up was for: placed now, with the request id the
	// remedy gave it, so a resent form buys once.
	acct, err = p.Customers.ByID(r.Context(), acct.ID)
	if err == nil {
		var o sale.Order
		if o, err = parseOrder(r.PostForm); err == nil {
			var res *protocol.PurchaseResult
			if res, err = p.Shop.Buy(r.Context(), acct, o, r.PostFormValue("order_request_id")); err == nil {
				p.Sessions.Flash(w, r, fmt.Sprintf("Added %s and bought %d stamps. Print them on your sheet.", amt, len(res.Indicia)))
				http.Redirect(w, r, "/portal/purchases/"+res.RequestID, http.StatusSeeOther)
				return
			}
		}
	}
	_, msg := problem(err)
	p.Sessions.Flash(w, r, "Added "+amt.String()+" to your account, but the order did not go through: "+msg)
	http.Redirect(w, r, "/portal/", http.StatusSeeOther)
}

// payCodeData is the pay-at-a-kiosk page: a fresh code, once made.
type payCodeData struct {
	Code    string
	QR      template.URL // a PNG data URL the kiosk's scanner reads
	Expires time.Time
	Max     protocol.Mills // the most it pays
}

func (p *Portal) payCodeForm(w http.ResponseWriter, r *http.Request) {
	p.render(w, r, http.StatusOK, "paycode.html", page{Title: "Pay at a kiosk"})
}

// payCode makes a one-time code that pays one kiosk purchase from the
// balance: the kiosk gets the customer's money only with it.
func (p *Portal) payCode(w http.ResponseWriter, r *http.Request) {
	acct := current(r).Subject
	max, err := protocol.ParseMills(strings.TrimPrefix(strings.TrimSpace(r.PostFormValue("max")), "$"))
	if err != nil || max <= 0 {
		p.render(w, r, http.StatusUnprocessableEntity, "paycode.html", page{Title: "Pay at a kiosk", Error: "Say the most the code may pay, such as 5.00."})
		return
	}
	code, exp, err := p.Customers.NewPayCode(r.Context(), acct.ID, max)
	if errors.Is(err, accounts.ErrTooManyPayCodes) {
		p.render(w, r, http.StatusTooManyRequests, "paycode.html", page{Title: "Pay at a kiosk",
			Error: fmt.Sprintf("You have %d pay codes not yet used. Use one, or wait until one expires (%d minutes after it was made).",
				accounts.MaxOpenPayCodes, int(accounts.PayCodeTTL.Minutes()))})
		return
	}
	if err != nil {
		p.fail(w, r, err)
		return
	}
	qr, err := qrDataURL(code)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	p.Log.Info("pay code made", "account", acct.ID, "expires", exp)
	w.Header().Set("Cache-Control", "no-store")
	p.render(w, r, http.StatusOK, "paycode.html", page{Title: "Pay at a kiosk", Data: payCodeData{Code: code, QR: qr, Expires: exp, Max: max}})
}

// qrDataURL draws s as a QR code, scaled for a phone screen, as a data URL.
func qrDataURL(s string) (template.URL, error) {
	c, err := qr.Encode(s, qr.M, qr.Auto)
	if err != nil {
		return "", fmt.Errorf("portal: qr: %w", err)
	}
	if c, err = barcode.Scale(c, 240, 240); err != nil {
		return "", fmt.Errorf("portal: qr: %w", err)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, c); err != nil {
		return "", fmt.Errorf("portal: qr: %w", err)
	}
	return template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(b.Bytes())), nil
}

func (p *Portal) zip(w http.ResponseWriter, r *http.Request) {
	acct := current(r).Subject
	if err := p.Customers.SetZIP(r.Context(), acct.ID, protocol.ZIP(strings.TrimSpace(r.PostFormValue("zip")))); err != nil {
		_, msg := problem(err)
		p.Sessions.Flash(w, r, msg)
		http.Redirect(w, r, "/portal/", http.StatusSeeOther)
		return
	}
	p.Sessions.Flash(w, r, "ZIP code saved.")
	http.Redirect(w, r, "/portal/", http.StatusSeeOther)
}

func (p *Portal) purchases(w http.ResponseWriter, r *http.Request) {
	rows, err := p.History.SalesOf(r.Context(), sale.WebKioskID(current(r).Subject.ID), 200)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	p.render(w, r, http.StatusOK, "purchases.html", page{Title: "Purchases", Data: rows})
}

// purchaseData is one purchase's page.
type purchaseData struct {
	Sale         views.SaleRow
	Refundable   map[string]bool
	WindowDays   int
	Printable    bool
	RefundBefore time.Time
}

// mine finds one of the customer's purchases; anyone else's is not found,
// as if it did not exist.
func (p *Portal) mine(r *http.Request) (*views.SaleRow, error) {
	return p.History.SaleOf(r.Context(), sale.WebKioskID(current(r).Subject.ID), chi.URLParam(r, "id"))
}

func (p *Portal) purchase(w http.ResponseWriter, r *http.Request) {
	s, err := p.mine(r)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	if s == nil {
		http.NotFound(w, r)
		return
	}
	d := purchaseData{Sale: *s, Refundable: map[string]bool{}, WindowDays: int(p.RefundWindow.Hours() / 24), RefundBefore: s.At.Add(p.RefundWindow)}
	inWindow := p.Now().Before(d.RefundBefore)
	for _, st := range s.Stamps {
		if st.State != "voided" {
			d.Printable = true
			d.Refundable[st.Label] = inWindow
		}
	}
	p.render(w, r, http.StatusOK, "purchase.html", page{Title: "Purchase " + s.RequestID, Data: d})
}

func (p *Portal) pdf(w http.ResponseWriter, r *http.Request) {
	s, err := p.mine(r)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	if s == nil || s.Status != protocol.ResultOK {
		http.NotFound(w, r)
		return
	}
	out, err := p.History.Result(r.Context(), s.KioskID, s.RequestID)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	res, err := protocol.DecodePurchaseResult(out)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	live := map[string]bool{}
	for _, st := range s.Stamps {
		live[st.Label] = st.State != "voided"
	}
	rt, _ := p.Rates.Current(p.Now())
	var sheet protocol.SheetSerial
	var stamps []sheetpdf.Stamp
	for _, in := range res.Indicia {
		if !live[in.LabelSerial] {
			continue // refunded: must not be printed
		}
		dec, err := protocol.ParseIndicium(in.Matrix)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		service := in.RateClass
		if c, ok := rt.Class(in.RateClass); ok {
			service = c.Print
		}
		ls := label.FromIndicium(dec, in.Matrix, service)
		sheet = dec.Label.Sheet
		stamps = append(stamps, sheetpdf.Stamp{Position: dec.Label.Position, Matrix: in.Matrix,
			Lines: []string{ls.Amount.String() + " " + ls.Service, "US POSTAGE  " + ls.Date.String(), "FROM ZIP " + ls.OriginZIP, "METER " + ls.Meter}})
	}
	if len(stamps) == 0 {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/pdf")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="frank-%s-%s.pdf"`, sheet, s.RequestID))
	w.Header().Set("Cache-Control", "no-store")
	if err := sheetpdf.Render(w, sheet, stamps, sheetpdf.Letter10); err != nil {
		p.fail(w, r, err)
	}
}

func (p *Portal) refund(w http.ResponseWriter, r *http.Request) {
	acct := current(r).Subject
	id := chi.URLParam(r, "id")
	back := "/portal/purchases/" + id
	lbl, err := protocol.ParseLabelSerial(r.PostFormValue("label"))
	if err != nil {
		p.Sessions.Flash(w, r, "Pick a stamp to refund.")
		http.Redirect(w, r, back, http.StatusSeeOther)
		return
	}
	amt, err := p.Shop.RefundUnused(r.Context(), acct, id, lbl, p.RefundWindow)
	if err != nil {
		status, msg := problem(err)
		if status == http.StatusInternalServerError {
			p.Log.Error("portal refund", "account", acct.ID, "label", lbl, "err", err)
		}
		p.Sessions.Flash(w, r, "No refund: "+msg)
		http.Redirect(w, r, back, http.StatusSeeOther)
		return
	}
	p.Sessions.Flash(w, r, fmt.Sprintf("Refunded %s for stamp %s. Do not use it: it is void.", amt, lbl))
	http.Redirect(w, r, back, http.StatusSeeOther)
}
