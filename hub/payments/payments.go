// Package payments takes the customer's money for a purchase: by card
// through the payment gateway (a kiosk terminal's token, or a card number
// from the patent's XML API, checked and passed on, never kept), or from a
// prepaid account. A payment is authorized before any stamp is signed,
// captured once the sale is recorded, voided if the sale fails, and
// refunded in part for a stamp that failed to print.
package payments

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/frank-postage/frank/hub/accounts"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/metrics"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// Gateway is the card gateway's HTTP API.
type Gateway struct {
	URL  string
	HTTP *http.Client
	// HoldsPage is how many holds a page of Holds asks for (default 100).
	HoldsPage int
}

// NewGateway returns a client with the 5 s timeout past which a payment is
// payment_timeout.
func NewGateway(url string) *Gateway {
	// Every sale calls the gateway twice; keep enough connections open for
	// the purchases in flight (the default keeps 2 and dials the rest).
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 1024, 1024 // the default's 100 in all churns under load
	return &Gateway{URL: url, HTTP: &http.Client{Timeout: 5 * time.Second, Transport: tr}}
}

// Auth is an approved authorization.
type Auth struct {
	ID    string `json:"auth_id"`
	Brand string `json:"brand"`
	Last4 string `json:"last4"`
}

// Authorize asks the gateway to hold amount on a token or a card.
func (g *Gateway) Authorize(ctx context.Context, key string, amount protocol.Mills, token string, card *Card) (Auth, error) {
	body := map[string]any{"key": key, "amount_mills": amount}
	if card != nil {
		body["card"] = map[string]string{"number": card.Number, "exp": card.Exp, "name": card.Name}
	} else {
		body["token"] = token
	}
	var a Auth
	err := g.call(ctx, "/v1/authorize", body, &a)
	var te interface{ Timeout() bool }
	switch {
	case errors.As(err, &te) && te.Timeout(), errors.Is(err, context.DeadlineExceeded):
		// The gateway may still approve; void by key so no hold is left.
		vctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		g.call(vctx, "/v1/void", map[string]any{"key": key}, nil)
		cancel()
		return Auth{}, protocol.Errorf(protocol.CodePaymentTimeout, "the card gateway did not answer; nothing was charged")
	case err != nil:
		return Auth{}, err
	}
	return a, nil
}

// Token is a card stored in the gateway's vault.
type Token struct {
	Token string `json:"token"`
	Brand string `json:"brand"`
	Last4 string `json:"last4"`
}

// Tokenize stores a card with the gateway for later payments.
func (g *Gateway) Tokenize(ctx context.Context, card *Card) (Token, error) {
	var t Token
	err := g.call(ctx, "/v1/tokens", map[string]any{"card": map[string]string{"number": card.Number, "exp": card.Exp, "name": card.Name}}, &t)
	if err != nil {
		return Token{}, err
	}
	if !strings.HasPrefix(t.Token, "tok_") || len(t.Last4) != 4 {
		// Not the token itself: it pays, and errors are logged.
		return Token{}, fmt.Errorf("payments: tokenize: the gateway answered a token not of the form tok_..., or last4 %q", gatewayText(t.Last4))
	}
	return t, nil
}

// Capture takes the held amount. A capture the gateway refused because
// the hold is gone is ErrNotCaptured; any other error leaves the outcome
// unknown.
func (g *Gateway) Capture(ctx context.Context, authID string, amount protocol.Mills) error {
	err := g.call(ctx, "/v1/capture", map[string]any{"auth_id": authID, "amount_mills": amount}, nil)
	var se *StatusError
	if errors.As(err, &se) && holdGone(se.Status) {
		return fmt.Errorf("%w: %w", ErrNotCaptured, err)
	}
	return err
}

// holdGone says whether a capture's HTTP status means the gateway will
// capture nothing: declined by the issuer (402), no such authorization
// (404), voided or otherwise not capturable (409), expired (410). Other
// statuses (408, 429, 5xx) say nothing about the hold: the capture is
// asked again.
func holdGone(status int) bool {
	switch status {
	case http.StatusPaymentRequired, http.StatusNotFound, http.StatusConflict, http.StatusGone:
		return true
	}
	return false
}

// Capture is one capture of a batch.
type Capture struct {
	AuthID string         `json:"auth_id"`
	Amount protocol.Mills `json:"amount_mills"`
}

// CaptureBatch takes many held amounts in one call, as acquirers settle
// captures in batches. It returns each capture's error (ErrNotCaptured for
// one whose hold is gone, see holdGone), or one error for the call, which
// leaves every capture's outcome unknown.
func (g *Gateway) CaptureBatch(ctx context.Context, cs []Capture) ([]error, error) {
	var out struct {
		Results []struct {
			AuthID  string `json:"auth_id"`
			Status  int    `json:"status"`
			Message string `json:"message"`
		} `json:"results"`
	}
	if err := g.call(ctx, "/v1/captures", map[string]any{"captures": cs}, &out); err != nil {
		return nil, err
	}
	if len(out.Results) != len(cs) {
		return nil, fmt.Errorf("payments: gateway /v1/captures: %d results for %d captures", len(out.Results), len(cs))
	}
	errs := make([]error, len(cs))
	for i, r := range out.Results {
		switch {
		case r.AuthID != cs[i].AuthID:
			errs[i] = fmt.Errorf("payments: gateway /v1/captures: result %d is for %s, not %s", i, gatewayText(r.AuthID), cs[i].AuthID)
		case r.Status == http.StatusOK:
		case holdGone(r.Status):
			errs[i] = fmt.Errorf("%w: payments: gateway capture %s: %w", ErrNotCaptured, r.AuthID, &StatusError{Path: "/v1/captures", Status: r.Status, Message: gatewayText(r.Message)})
		default:
			errs[i] = fmt.Errorf("payments: gateway capture %s: %w", r.AuthID, &StatusError{Path: "/v1/captures", Status: r.Status, Message: gatewayText(r.Message)})
		}
	}
	return errs, nil
}

// Hold is an authorization the gateway holds open: neither captured nor
// voided.
type Hold struct {
	AuthID string         `json:"auth_id"`
	Key    string         `json:"key"` // the key it was authorized under
	Amount protocol.Mills `json:"amount_mills"`
}

// Holds lists the holds open at the gateway that were approved at least
// age ago, page by page, up to holdsMax of them: a sweep finds the rest in
// its next round.
func (g *Gateway) Holds(ctx context.Context, age time.Duration) ([]Hold, error) {
	page := g.HoldsPage
	if page <= 0 {
		page = holdsPage
	}
	var all []Hold
	after := ""
	for len(all) < holdsMax {
		var out struct {
			Holds []Hold `json:"holds"`
			Next  string `json:"next"`
		}
		if err := g.call(ctx, "/v1/holds/search", map[string]any{"older_than_ms": age.Milliseconds(), "after": after, "limit": page}, &out); err != nil {
			return all, err
		}
		all = append(all, out.Holds...)
		if out.Next == "" || len(out.Holds) == 0 {
			break
		}
		after = out.Next
	}
	return all, nil
}

// A page of the holds search fits well within the 64 KiB call reads of an
// answer; a round of sweeps reads no more than holdsMax holds.
const (
	holdsPage = 100
	holdsMax  = 10_000
)

// Void releases a hold.
func (g *Gateway) Void(ctx context.Context, authID string) error {
	return g.call(ctx, "/v1/void", map[string]any{"auth_id": authID}, nil)
}

// VoidKey releases whatever hold an authorize call with key made, if any.
func (g *Gateway) VoidKey(ctx context.Context, key string) error {
	err := g.call(ctx, "/v1/void", map[string]any{"key": key}, nil)
	// Only the gateway's own 404 says it never approved the key: a 5xx or
	// a dropped connection leaves the hold as it was, whatever its text.
	var se *StatusError
	if errors.As(err, &se) && se.Status == http.StatusNotFound {
		return nil
	}
	return err
}

// Refund gives back part of a capture; key makes a retry safe.
func (g *Gateway) Refund(ctx context.Context, authID string, amount protocol.Mills, key string) error {
	return g.call(ctx, "/v1/refund", map[string]any{"auth_id": authID, "amount_mills": amount, "key": key}, nil)
}

func (g *Gateway) call(ctx context.Context, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.URL+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("payments: gateway %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusOK {
		if out != nil {
			if err := json.Unmarshal(body, out); err != nil {
				// encoding/json quotes a number it cannot store, which
				// may be a card number the gateway echoed.
				return fmt.Errorf("payments: gateway %s: unreadable answer: %s", path, gatewayText(err.Error()))
			}
		}
		return nil
	}
	var e struct {
		Code    string         `json:"code"`
		Message string         `json:"message"`
		Missing protocol.Mills `json:"missing_mills"`
	}
	json.Unmarshal(body, &e)
	e.Message = gatewayText(e.Message)
	switch e.Code {
	case "declined":
		return protocol.Errorf(protocol.CodePaymentDeclined, "the card was declined")
	case "insufficient_funds":
		return &protocol.Error{Code: protocol.CodeInsufficientFunds, MissingMills: e.Missing, Message: "the card has insufficient funds"}
	case "invalid":
		return protocol.Errorf(protocol.CodePaymentInvalid, "the payment data was refused: %s", e.Message)
	}
	// What the status means is the caller's to judge (holdGone, VoidKey).
	return &StatusError{Path: path, Status: resp.StatusCode, Code: gatewayText(e.Code), Message: e.Message}
}

// gatewayText is a gateway's own text as the hub passes it on, to a log or
// a kiosk: short, and with any run of 12 or more digits (a card number,
// however spaced) taken out, as card numbers are never logged.
func gatewayText(s string) string {
	const most = 200
	if len(s) > most {
		s = s[:most] + "..."
	}
	return protocol.RedactCardNumbers(s)
}

// StatusError is a gateway's answer with an HTTP status other than 200
// that is not a refusal of the card (declined, insufficient funds,
// invalid: those are protocol errors). Callers decide by Status, never by
// the error's text, which can hold anything (URLs, ports, messages).
type StatusError struct {
	Path    string // the call, as /v1/capture
	Status  int
	Code    string // the gateway's code, if it sent one
	Message string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("payments: gateway %s: %d %s", e.Path, e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		msg += ": " + e.Code
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// ErrNotCaptured is a capture the gateway refused for good: declined, or
// the hold is gone (it expired or was voided, see holdGone): no money
// moved. Any other
// capture error leaves the outcome unknown, and the payment stays
// authorized until settled.
var ErrNotCaptured = errors.New("payments: the gateway refused the capture")

// Key names the purchase a payment belongs to.
type Key struct{ KioskID, RequestID string }

// Source is how the customer pays.
type Source struct {
	Token     string // a payment terminal's token
	Card      *Card  // a card number, from the XML API
	AccountID int64  // a prepaid account
}

// Payment is one purchase's payment as recorded.
type Payment struct {
	Key
	Method    string // card or account
	AccountID int64
	Ref       string // gateway authorization id, or the account hold's ref
	Brand     string
	Last4     string
	Amount    protocol.Mills
	State     string
	Captured  protocol.Mills
	Refunded  protocol.Mills
	attempt   string // the key the gateway or the account hold knows it by
	hub       string // the hub that owns it ("" before hubs were named)
	updated   time.Time
	// first: the card was held before any record of the attempt
	// (holdFirst); the sale's commit inserts the payment.
	first bool
}

// ErrRecorded says a hold was not released because its sale recorded it.
var ErrRecorded = errors.New("payments: the hold is recorded with its sale")

// gateway is the card gateway as Payments uses it.
type gateway interface {
	Authorize(ctx context.Context, key string, amount protocol.Mills, token string, card *Card) (Auth, error)
	Capture(ctx context.Context, authID string, amount protocol.Mills) error
	Void(ctx context.Context, authID string) error
	VoidKey(ctx context.Context, key string) error
	Refund(ctx context.Context, authID string, amount protocol.Mills, key string) error
	Tokenize(ctx context.Context, card *Card) (Token, error)
}

var _ gateway = (*Gateway)(nil)

// holdSearcher is a gateway that lists the holds it has open. With one, a
// kiosk's card sale holds the card before anything is recorded, and its
// commit records the payment: a hold that no commit recorded is found at
// the gateway and voided (sweepHolds).
type holdSearcher interface {
	Holds(ctx context.Context, age time.Duration) ([]Hold, error)
}

var _ holdSearcher = (*Gateway)(nil)

// alerter tells ops.
type alerter interface {
	Raise(ctx context.Context, kind, subject, message string)
}

// stager times the stages of a purchase (metrics.Stage).
type stager interface {
	Stage(stage string, d time.Duration)
}

// sweepCounter counts the holds the sweep voids (metrics.HoldSwept).
type sweepCounter interface {
	HoldSwept(whose string)
}

// claimer takes a request's claim if no live hub holds it. An alias: it
// is also what sheetSettler hands on.
type claimer = interface {
	TryTake(ctx context.Context, scope, name string) (release func(), ok bool, err error)
}

// sheetSettler drops the web sheet claims that dead hubs made for sales
// they never committed (stock.Stock).
type sheetSettler interface {
	SettleClaims(ctx context.Context, turns claimer) ([]protocol.SheetSerial, error)
}

// Payments records payments and moves the money.
type Payments struct {
	// Hub names this hub in hub_leases; each payment records it, and only
	// this hub settles it while its lease lives.
	Hub string
	// Claims, if set, makes settling a dead hub's payment wait its turn
	// with a hub that took its request over.
	Claims claimer
	// Sheets, if set, drops the web sheet claims of dead hubs whose sales
	// were never made, as their payments are settled.
	Sheets sheetSettler
	// Alerts, if set, is told of a sale whose capture the gateway refused.
	Alerts alerter
	// Stages, if set, times each hold's attempt record and its
	// authorization.
	Stages stager
	// Sweeps, if set, counts the holds that no payment recorded, voided
	// late by sweepHolds.
	Sweeps   sweepCounter
	db       *store.DB
	gw       gateway
	accounts *accounts.Accounts
	log      *slog.Logger
	now      func() time.Time
	captures captures
}

// New returns the payment service.
func New(db *store.DB, gw gateway, acc *accounts.Accounts, log *slog.Logger, now func() time.Time) *Payments {
	if now == nil {
		now = time.Now
	}
	return &Payments{db: db, gw: gw, accounts: acc, log: log, now: now}
}

// Authorize holds amount for the purchase key. The attempt is recorded
// before the gateway or the account is asked, so a crash in between leaves
// a record that Reconcile voids. A purchase retried after a failure
// authorizes again, after voiding an authorization still open.
func (p *Payments) Authorize(ctx context.Context, key Key, src Source, amount protocol.Mills) (*Payment, error) {
	pay, err := p.Hold(ctx, key, src, amount)
	if err != nil {
		return nil, err
	}
	w := pay.Authorized()
	n, err := p.db.GroupExec(ctx, w.Query, w.Args...)
	if err != nil || n == 0 {
		// Not recorded, or the attempt was settled meanwhile by a hub that
		// took us for dead: the hold is ours alone to release.
		if verr := p.void(ctx, pay); verr != nil {
			p.log.Error("authorization not voided; settlement voids it by its key", "request_id", key.RequestID, "err", verr)
		}
		if err == nil {
			return nil, ErrOtherHub
		}
		return nil, fmt.Errorf("payments: record authorization: %w", err)
	}
	pay.State = "authorized"
	return pay, nil
}

// Hold records the attempt and holds amount at the gateway or on the
// account, and leaves recording the authorization to the caller: a sale
// commits pay.Authorized() with itself, so that one durable commit
// answers the customer. A sale that is not recorded calls Release.
func (p *Payments) Hold(ctx context.Context, key Key, src Source, amount protocol.Mills) (*Payment, error) {
	if src.Card != nil {
		if err := src.Card.Check(p.now()); err != nil {
			return nil, err
		}
	}
	pay, err := newAttempt(key, src, amount, p.Hub)
	if err != nil {
		return nil, err
	}
	// Most purchases are new: the attempt is written without a read. Only
	// when a row is there already is it read and settled first.
	start := time.Now()
	n, err := p.recordAttempt(ctx, pay, "", nil)
	if err == nil && n == 0 {
		var prevAttempt string
		if prevAttempt, err = p.settlePrevious(ctx, key); err == nil {
			n, err = p.recordAttempt(ctx, pay, prevAttempt, nil)
		}
	}
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, ErrOtherHub
	}
	p.stage(metrics.StageAttempt, start)
	return p.hold(ctx, pay, src)
}

// newAttempt is hub's new attempt at paying amount for key from src. Its
// key names the purchase and the hub, for a hold found at the gateway
// that nothing recorded (sweepHolds): kiosk/request/nonce/hub. Kiosk and
// request ids have no slash (validKey); a hub's name may.
func newAttempt(key Key, src Source, amount protocol.Mills, hub string) (*Payment, error) {
	if err := validKey(key); err != nil {
		return nil, err
	}
	pay := &Payment{Key: key, Amount: amount, State: "authorizing", Method: "card", AccountID: src.AccountID, hub: hub,
		attempt: key.KioskID + "/" + key.RequestID + "/" + nonce() + "/" + hub}
	if src.AccountID != 0 {
		pay.Method = "account"
	}
	return pay, nil
}

// HoldChecked is Hold for a card token, with check run in the attempt's
// own durable transaction, right after its row: the look at what the
// request was answered before and the attempt share one commit. go says,
// once check has run, whether to hold: if not, the attempt is recorded
// voided and HoldChecked returns no payment and no error, and the caller
// acts on check. When key has a payment already (or the commit failed),
// nothing is recorded and ok is false: the caller then checks, and holds
// with Hold, which settles the earlier attempt first.
func (p *Payments) HoldChecked(ctx context.Context, key Key, token string, amount protocol.Mills, check *store.Read, goOn func() bool) (pay *Payment, ok bool, err error) {
	if _, ok := p.gw.(holdSearcher); ok {
		return p.holdFirst(ctx, key, token, amount, check, goOn)
	}
	src := Source{Token: token}
	if pay, err = newAttempt(key, src, amount, p.Hub); err != nil {
		return nil, true, err // final: no id of this shape is ever paid
	}
	start := time.Now()
	n, err := p.recordAttempt(ctx, pay, "", check)
	if err != nil || n == 0 {
		return nil, false, nil
	}
	p.stage(metrics.StageAttempt, start)
	if !goOn() {
		// No card was asked: the attempt is over. If this record fails,
		// the attempt stays open and settlement settles it.
		if err := p.settled(context.WithoutCancel(ctx), pay, "authorizing", "voided"); err != nil {
			p.log.Error("unused payment attempt not recorded voided; settlement settles it", "request_id", key.RequestID, "err", err)
		}
		return nil, true, nil
	}
	pay, err = p.hold(ctx, pay, src)
	return pay, true, err
}

// holdFirst is HoldChecked with a gateway that lists its open holds: no
// durable commit comes before the card. check is read with a look for a
// payment of key (PaidRead); if there is none, the card is held
// (HoldFirst). A request paid for before goes the long way (ok is false),
// as Hold settles the earlier attempt first.
func (p *Payments) holdFirst(ctx context.Context, key Key, token string, amount protocol.Mills, check *store.Read, goOn func() bool) (*Payment, bool, error) {
	r, paid := p.PaidRead(key, check)
	start := time.Now()
	if err := p.db.WarmRead(ctx, r); err != nil || *paid != 0 {
		return nil, false, nil
	}
	p.stage(metrics.StageAttempt, start)
	if !goOn() {
		return nil, true, nil // nothing held, nothing recorded
	}
	pay, err := p.HoldFirst(ctx, key, token, amount)
	return pay, true, err
}

// PaidRead is r with a count of key's payments added, which *paid holds
// once the read has run, for a caller that may hold the card first
// (HoldFirst) if it is 0. With a gateway that cannot list its holds it
// returns r and nil: every hold's attempt is then recorded first.
func (p *Payments) PaidRead(key Key, r *store.Read) (*store.Read, *int) {
	if _, ok := p.gw.(holdSearcher); !ok {
		return r, nil
	}
	paid := new(int)
	return &store.Read{
		Query: `SELECT c.*, (SELECT COUNT(*) FROM payments WHERE kiosk_id = ? AND request_id = ?) FROM (` + r.Query + `) AS c`,
		Args:  append([]any{key.KioskID, key.RequestID}, r.Args...), // in the order of the text
		Row: func(scan func(dest ...any) error) error {
			return r.Row(func(dest ...any) error { return scan(append(dest, paid)...) })
		},
	}, paid
}

// HoldFirst holds amount on a card token for key, which PaidRead found
// with no payment, without recording anything: the sale's own commit
// records the payment (Authorized inserts it), so one durable commit
// answers the kiosk. The caller holds the request's claim.
//
// What a hub that dies before its commit, or loses the commit's outcome,
// or fails to void the hold of a sale not made, leaves open is a hold that
// no payment records: sweepHolds finds it at the gateway and voids it.
func (p *Payments) HoldFirst(ctx context.Context, key Key, token string, amount protocol.Mills) (*Payment, error) {
	src := Source{Token: token}
	pay, err := newAttempt(key, src, amount, p.Hub)
	if err != nil {
		return nil, err
	}
	pay.first = true
	return p.hold(ctx, pay, src)
}

// hold asks the gateway or the account for pay, whose attempt is
// recorded, or is to be recorded with its sale (pay.first).
func (p *Payments) hold(ctx context.Context, pay *Payment, src Source) (*Payment, error) {
	amount, attempt := pay.Amount, pay.attempt
	defer p.stage(metrics.StageAuthorize, time.Now())
	switch pay.Method {
	case "account":
		if err := p.accounts.Hold(ctx, src.AccountID, amount, attempt); err != nil {
			var pe *protocol.Error
			if !errors.As(err, &pe) {
				// The debit may have committed though its answer was lost:
				// the attempt stays open, and settlement gives back
				// whatever it holds (Release is keyed by the attempt).
				p.log.Error("account hold", "account", src.AccountID, "err", err)
				return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "the account could not be charged now; anything held is given back")
			}
			p.settled(ctx, pay, "authorizing", "voided")
			return nil, err
		}
		pay.Ref = attempt
	default:
		a, err := p.gw.Authorize(ctx, attempt, amount, src.Token, src.Card)
		if err != nil {
			var pe *protocol.Error
			if !errors.As(err, &pe) {
				// No answer: the gateway may have approved. The attempt
				// stays open, and settlement voids it by its key; a hold
				// never recorded (pay.first) is swept.
				p.log.Error("card gateway", "err", err)
				return nil, protocol.Errorf(protocol.CodePaymentTimeout, "the card gateway is not answering; nothing was charged")
			}
			if !pay.first {
				p.settled(ctx, pay, "authorizing", "voided")
			}
			return nil, err
		}
		pay.Ref, pay.Brand, pay.Last4 = a.ID, cardBrand(a.Brand), cardLast4(a.Last4)
	}
	pay.updated = p.now()
	return pay, nil
}

// cardBrand is the brand a gateway answered, stored and printed on the
// receipt: dropped if it is not a short name, so that a gateway that
// answers with the card number there does not get it stored.
func cardBrand(s string) string {
	if len(s) > 32 || protocol.HasCardNumber(s) {
		return ""
	}
	return s
}

// cardLast4 is the last four digits a gateway answered, or none.
func cardLast4(s string) string {
	if len(s) != 4 || strings.Trim(s, "0123456789") != "" {
		return ""
	}
	return s
}

// stage records the time since start in stage, if stages are timed.
func (p *Payments) stage(stage string, start time.Time) {
	if p.Stages != nil {
		p.Stages.Stage(stage, time.Since(start))
	}
}

// recordAttempt writes pay's attempt. A row already there is replaced
// only if it still holds prevAttempt, settled: a hub that raced us here
// (its lease lapsed while it served the request, and we took it over)
// keeps its own attempt. It reports the rows written.
func (p *Payments) recordAttempt(ctx context.Context, pay *Payment, prevAttempt string, check *store.Read) (int64, error) {
	now := p.now().UnixMicro()
	exec := p.db.GroupExec
	if check != nil {
		exec = func(ctx context.Context, query string, args ...any) (int64, error) {
			return p.db.GroupExecRead(ctx, check, query, args...)
		}
	}
	n, err := exec(ctx, `INSERT INTO payments (kiosk_id, request_id, method, account_id, attempt_key, amount, state, captured, refunded, created_at, updated_at, hub)
		VALUES (?, ?, ?, ?, ?, ?, 'authorizing', 0, 0, ?, ?, ?)
		ON CONFLICT (kiosk_id, request_id) DO UPDATE SET method = excluded.method, account_id = excluded.account_id,
		attempt_key = excluded.attempt_key, gateway_ref = NULL, brand = NULL, last4 = NULL, amount = excluded.amount,
		state = 'authorizing', captured = 0, refunded = 0, updated_at = excluded.updated_at, hub = excluded.hub
		WHERE COALESCE(payments.attempt_key, '') = ? AND payments.state NOT IN ('authorizing', 'authorized', 'captured', 'voiding')`,
		pay.KioskID, pay.RequestID, pay.Method, nullInt(pay.AccountID), pay.attempt, pay.Amount, now, now, nullStr(p.Hub), prevAttempt)
	if err != nil {
		return 0, fmt.Errorf("payments: record attempt: %w", err)
	}
	return n, nil
}

// settlePrevious settles an earlier attempt of key that is still open,
// and returns its attempt key. It is never reused: its hold may be gone at
// the gateway (a settlement voided it and could not record that), and the
// sale it was for was not recorded, or the precheck would have replayed
// it. A live hub's open attempt is its own business: ErrOtherHub.
func (p *Payments) settlePrevious(ctx context.Context, key Key) (string, error) {
	prev, err := p.Get(ctx, key)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil // gone meanwhile
	}
	if err != nil {
		return "", err
	}
	if prev.State != "authorizing" && prev.State != "authorized" && prev.State != "voiding" {
		return prev.attempt, nil
	}
	if prev.hub != p.Hub {
		alive, err := p.hubAlive(ctx, prev.hub)
		if err != nil {
			return "", err
		}
		if alive {
			return "", ErrOtherHub
		}
	}
	if _, topUp := fundAccount(key.KioskID); topUp && prev.State == "authorized" {
		// A top-up being finished (Fund or settlement): its capture may
		// have happened, so it is never voided here.
		return "", fundPending()
	}
	if prev.State == "authorized" {
		// Recorded with its sale (a hub whose lease lapsed committed it
		// after our precheck): asked again, the precheck replays the sale,
		// and settlement captures it. Voided here, the sale would be free.
		sold, err := p.sold(ctx, key)
		if err != nil {
			return "", err
		}
		if sold {
			return "", ErrOtherHub
		}
		if err := p.Void(ctx, key); err != nil {
			return "", err
		}
		return prev.attempt, nil
	}
	if err := p.abandon(ctx, key); err != nil {
		return "", err
	}
	return prev.attempt, nil
}

// sold says whether key's sale is recorded. A payment is recorded
// authorized in its sale's transaction, so once it reads authorized a sale
// that went with it is there to read.
func (p *Payments) sold(ctx context.Context, key Key) (bool, error) {
	var n int
	err := p.db.QueryRowStmt(ctx, nil, `SELECT COUNT(*) FROM sales WHERE kiosk_id = ? AND request_id = ? AND status = 'ok'`,
		key.KioskID, key.RequestID).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("payments: read sale %s/%s: %w", key.KioskID, key.RequestID, err)
	}
	return n > 0, nil
}

// Authorized is the write that records a held payment as authorized: a
// compare-and-set on its attempt, which changes no row if another hub
// settled the attempt meanwhile (and then the sale must not stand).
//
// A payment whose card was held first is inserted: the insert changes no
// row if the request has a payment already, such as the record a sweep
// wrote before voiding this hold (sweepHolds).
func (pay *Payment) Authorized() store.Write {
	if pay.first {
		now := pay.updated.UnixMicro()
		return store.Write{
			Query: `INSERT INTO payments (kiosk_id, request_id, method, attempt_key, gateway_ref, brand, last4, amount, state, captured, refunded, created_at, updated_at, hub)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'authorized', 0, 0, ?, ?, ?) ON CONFLICT (kiosk_id, request_id) DO NOTHING`,
			Args:  []any{pay.KioskID, pay.RequestID, pay.Method, pay.attempt, pay.Ref, pay.Brand, pay.Last4, pay.Amount, now, now, nullStr(pay.hub)},
			Stale: ErrOtherHub,
		}
	}
	return store.Write{
		Query: `UPDATE payments SET state = 'authorized', gateway_ref = ?, brand = ?, last4 = ?, updated_at = ?
		WHERE kiosk_id = ? AND request_id = ? AND attempt_key = ? AND state = 'authorizing'`,
		Args:  []any{pay.Ref, pay.Brand, pay.Last4, pay.updated.UnixMicro(), pay.KioskID, pay.RequestID, pay.attempt},
		Stale: ErrOtherHub,
	}
}

// Release gives back a hold whose sale was not recorded.
//
// A hold the database shows authorized or captured for its sale is not
// released: the sale's own commit recorded it, though the hub heard only
// the connection drop (a failover with the COMMIT in flight) and then
// found the sale already answered. Release returns ErrRecorded, and the
// hold is (or was) captured.
// If the database cannot be read the hold is left for settlement, which
// captures or voids it by what the database holds.
func (p *Payments) Release(ctx context.Context, pay *Payment) error {
	cur, err := p.Get(ctx, pay.Key)
	switch {
	case pay.first && errors.Is(err, sql.ErrNoRows): // nothing recorded
	case err != nil:
		return fmt.Errorf("payments: release %s/%s: %w", pay.KioskID, pay.RequestID, err)
	case cur.attempt == pay.attempt && (cur.State == "authorized" || cur.State == "captured"):
		// Recorded with its sale, and maybe captured already (a capture
		// worker or settlement got there first): voiding it would make the
		// sale free, or fail on a captured hold.
		return ErrRecorded
	}
	if err := p.void(ctx, pay); err != nil {
		return err // a hold never recorded is swept
	}
	if pay.first {
		return nil // the row, if any, is another attempt's or a sweep's
	}
	return p.settled(ctx, pay, "authorizing", "voided")
}

// Capture takes the authorized amount.
func (p *Payments) Capture(ctx context.Context, key Key) error {
	pay, err := p.Get(ctx, key)
	if err != nil {
		return err
	}
	if pay.State == "captured" {
		return nil
	}
	if pay.State != "authorized" {
		return fmt.Errorf("payments: capture %s/%s: payment is %s", key.KioskID, key.RequestID, pay.State)
	}
	return p.capture(ctx, pay)
}

// capture takes an authorized payment's amount.
func (p *Payments) capture(ctx context.Context, pay *Payment) error {
	var err error
	if pay.Method == "card" {
		err = p.gw.Capture(ctx, pay.Ref, pay.Amount)
	}
	return p.recordCapture(ctx, pay, err)
}

// recordCapture records pay captured, unless the gateway's capture
// failed with gwErr.
func (p *Payments) recordCapture(ctx context.Context, pay *Payment, gwErr error) error {
	if gwErr != nil {
		return fmt.Errorf("payments: capture %s/%s: %w", pay.KioskID, pay.RequestID, gwErr)
	}
	return p.settled(ctx, pay, "authorized", "captured")
}

// Void releases an authorization that was not captured.
func (p *Payments) Void(ctx context.Context, key Key) error {
	pay, err := p.Get(ctx, key)
	if err != nil {
		return err
	}
	if pay.State != "authorized" {
		return nil
	}
	if err := p.void(ctx, pay); err != nil {
		return err
	}
	return p.settled(ctx, pay, "authorized", "voided")
}

func (p *Payments) void(ctx context.Context, pay *Payment) error {
	if pay.Method == "account" {
		return p.accounts.Release(ctx, pay.AccountID, pay.attempt)
	}
	if err := p.gw.Void(ctx, pay.Ref); err != nil {
		return fmt.Errorf("payments: void %s: %w", pay.Ref, err)
	}
	return nil
}

// Refund gives back amount of a captured payment, at most once per ref:
// the money moves first, idempotent by ref at the gateway or the account,
// then the refund is recorded once, so a retry after a crash in between
// neither pays twice nor counts twice.
func (p *Payments) Refund(ctx context.Context, key Key, amount protocol.Mills, ref string) error {
	pay, err := p.Get(ctx, key)
	if err != nil {
		return err
	}
	var done int
	if err := p.db.QueryRowContext(ctx, p.db.Rebind(`SELECT COUNT(*) FROM payment_refunds WHERE kiosk_id = ? AND request_id = ? AND ref = ?`),
		key.KioskID, key.RequestID, ref).Scan(&done); err != nil {
		return fmt.Errorf("payments: refund %s/%s: %w", key.KioskID, key.RequestID, err)
	}
	if done > 0 {
		return nil
	}
	if pay.State == "authorized" {
		// Sold, its capture still queued: capture it now, then refund. The
		// gateway takes a repeated capture as a retry; if the capture
		// worker recorded it first, read that.
		if err := p.capture(ctx, pay); errors.Is(err, ErrChanged) {
			if pay, err = p.Get(ctx, key); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
	}
	if pay.State != "captured" || amount <= 0 || pay.Refunded+amount > pay.Captured {
		return protocol.Errorf(protocol.CodeRemedyNotAllowed, "nothing left to refund on that purchase")
	}
	switch pay.Method {
	case "account":
		err = p.accounts.Credit(ctx, pay.AccountID, amount, "refund", ref)
	default:
		err = p.gw.Refund(ctx, pay.Ref, amount, ref)
	}
	if err != nil {
		return fmt.Errorf("payments: refund %s/%s: %w", key.KioskID, key.RequestID, err)
	}
	if err := p.recordRefund(ctx, key, amount, ref); err != nil {
		return fmt.Errorf("payments: record refund %s/%s: %w", key.KioskID, key.RequestID, err)
	}
	return nil
}

func (p *Payments) recordRefund(ctx context.Context, key Key, amount protocol.Mills, ref string) error {
	now := p.now().UnixMicro()
	return p.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, p.db.Rebind(`INSERT INTO payment_refunds (kiosk_id, request_id, ref, amount, created_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (kiosk_id, request_id, ref) DO NOTHING`), key.KioskID, key.RequestID, ref, amount, now)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err // recorded by a concurrent retry
		}
		_, err = tx.ExecContext(ctx, p.db.Rebind(`UPDATE payments SET refunded = refunded + ?, updated_at = ? WHERE kiosk_id = ? AND request_id = ?`),
			amount, now, key.KioskID, key.RequestID)
		return err
	})
}

// Get reads a payment.
func (p *Payments) Get(ctx context.Context, key Key) (*Payment, error) {
	pay := &Payment{Key: key}
	var acct sql.NullInt64
	err := p.db.QueryRowStmt(ctx, nil, `SELECT method, account_id, attempt_key, COALESCE(gateway_ref, ''), COALESCE(brand, ''), COALESCE(last4, ''),
		amount, state, captured, refunded, COALESCE(hub, '') FROM payments WHERE kiosk_id = ? AND request_id = ?`, key.KioskID, key.RequestID).
		Scan(&pay.Method, &acct, &pay.attempt, &pay.Ref, &pay.Brand, &pay.Last4, &pay.Amount, &pay.State, &pay.Captured, &pay.Refunded, &pay.hub)
	if err != nil {
		return nil, fmt.Errorf("payments: read %s/%s: %w", key.KioskID, key.RequestID, err)
	}
	pay.AccountID = acct.Int64
	return pay, nil
}

// settled records pay's attempt moving from one state to another. It is
// a compare-and-set on the attempt: a hub whose lease lapsed while it
// worked must not overwrite what the hub that took over recorded.
func (p *Payments) settled(ctx context.Context, pay *Payment, from, to string) error {
	var captured protocol.Mills
	if to == "captured" {
		captured = pay.Amount
	}
	n, err := p.db.GroupExec(ctx, `UPDATE payments SET state = ?, captured = ?, updated_at = ?
		WHERE kiosk_id = ? AND request_id = ? AND attempt_key = ? AND state = ?`,
		to, captured, p.now().UnixMicro(), pay.KioskID, pay.RequestID, pay.attempt, from)
	if err != nil {
		return fmt.Errorf("payments: record %s: %w", to, err)
	}
	if n == 0 {
		return fmt.Errorf("payments: record %s %s/%s: %w", to, pay.KioskID, pay.RequestID, ErrChanged)
	}
	pay.State, pay.Captured = to, captured
	return nil
}

// ErrChanged is a payment another hub settled or replaced meanwhile.
var ErrChanged = errors.New("payments: changed by another hub")

// Reconcile settles what a crash left open: an attempt the gateway may or
// may not have approved is voided by its key; an authorization is captured
// if its sale was recorded, voided if not. The hub runs it at start.
//
// The gateway's open holds are not searched here: that waits for the
// hub's first round (SettleDead), so a start never waits on the gateway.
func (p *Payments) Reconcile(ctx context.Context) error {
	if err := p.settleDeadPayments(ctx); err != nil {
		return err
	}
	return p.creditFunds(ctx)
}

// SettleDead settles the open payments no live hub owns: this hub's before
// it started (it has a new name each start), those of hubs whose lease
// has lapsed, and those written before payments named their hub. A live
// hub's payments are its own business: it may be selling them now.
//
// It also voids the dead hubs' holds at the gateway that no payment
// records (sweepHolds).
func (p *Payments) SettleDead(ctx context.Context) error {
	err := p.settleDeadPayments(ctx)
	alive := map[string]bool{p.Hub: true}
	return errors.Join(err, p.sweepHolds(ctx, 0, metrics.HoldDead, func(hub string) (bool, error) {
		a, ok := alive[hub]
		if !ok {
			var err error
			if a, err = p.hubAlive(ctx, hub); err != nil {
				return false, err
			}
			alive[hub] = a
		}
		return !a, nil
	}))
}

// settleDeadPayments settles the open payments no live hub owns, then
// the web sheet claims those hubs left with no sale made.
func (p *Payments) settleDeadPayments(ctx context.Context) error {
	at, args := p.db.LeaseNow(p.now())
	err := p.settleOpen(ctx, `COALESCE(p.hub, '') <> ? AND NOT EXISTS (SELECT 1 FROM hub_leases l WHERE l.hub = p.hub AND l.until >= `+at+`)`,
		append([]any{p.Hub}, args...)...)
	return errors.Join(err, p.settleSheetClaims(ctx))
}

// settleSheetClaims drops the claims dead hubs made on web sheets for
// sales they never made: a hub killed after claiming the sheet and before
// its sale was made or refused left it its customer's, who paid nothing
// for it, and no one else could buy on it.
func (p *Payments) settleSheetClaims(ctx context.Context) error {
	if p.Sheets == nil {
		return nil
	}
	// p.Claims is nil, not a nil pointer, when unset: no other hub.
	dropped, err := p.Sheets.SettleClaims(ctx, p.Claims)
	for _, sh := range dropped {
		p.log.Info("a dead hub's claim of a web sheet dropped: no sale on it was made", "sheet", sh)
	}
	if err != nil {
		return fmt.Errorf("payments: settle sheet claims: %w", err)
	}
	return nil
}

// SettleStale settles this hub's own open payments last touched before
// now-age that no sale of this process is serving: a capture whose outcome
// was unknown (the gateway or the database did not answer), or a void
// that failed. It needs Claims, which know what this process serves.
func (p *Payments) SettleStale(ctx context.Context, age time.Duration) error {
	if p.Claims == nil {
		return nil
	}
	err := p.settleOpen(ctx, `p.hub = ? AND p.updated_at < ?`, p.Hub, p.now().Add(-age).UnixMicro())
	return errors.Join(err, p.sweepHolds(ctx, age, metrics.HoldOwn, func(hub string) (bool, error) { return hub == p.Hub, nil }))
}

// sweepHolds voids the holds open at the gateway for at least age, made by
// a hub that pick picks, that no payment records, and counts them as
// whose. holdFirst holds a card
// before its sale's commit records the payment, so a hub that died in
// between, or lost the commit's outcome, or could not void the hold of a
// sale not made, leaves one.
//
// A hold is swept under its request's claim, never while a sale serves it.
// When the request has no payment, one is recorded for the hold first, an
// open attempt of this hub: the insert of the sale that made the hold then
// changes no row, so a hub whose lease lapsed mid-sale cannot record a
// sale on the hold voided here, and if this hub dies midway settlement
// voids the attempt.
func (p *Payments) sweepHolds(ctx context.Context, age time.Duration, whose string, pick func(hub string) (bool, error)) error {
	hs, ok := p.gw.(holdSearcher)
	if !ok {
		return nil
	}
	holds, err := hs.Holds(ctx, age)
	var errs []error
	if err != nil { // the pages read are swept still
		errs = append(errs, fmt.Errorf("payments: sweep holds: %w", err))
	}
	for _, h := range holds {
		key, hub, ok := attemptOf(h.Key)
		if !ok {
			continue // not made by a hub
		}
		if mine, err := pick(hub); err != nil || !mine {
			errs = append(errs, err)
			continue
		}
		swept, err := p.sweepHold(ctx, h, key)
		if err != nil {
			errs = append(errs, fmt.Errorf("payments: sweep hold %s: %w", h.Key, err))
		} else if swept {
			p.log.Info("hold that no payment records voided", "kiosk", key.KioskID, "request_id", key.RequestID, "hub", hub)
			if p.Sweeps != nil {
				p.Sweeps.HoldSwept(whose)
			}
		}
	}
	return errors.Join(errs...)
}

// sweepHold voids h, the hold of key, unless a payment records it.
func (p *Payments) sweepHold(ctx context.Context, h Hold, key Key) (bool, error) {
	if p.Claims != nil {
		release, ok, err := p.Claims.TryTake(ctx, key.KioskID, key.RequestID)
		if err != nil || !ok {
			return false, err
		}
		defer release()
	}
	cur, err := p.Get(ctx, key)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		now := p.now().UnixMicro()
		n, err := p.db.GroupExec(ctx, `INSERT INTO payments (kiosk_id, request_id, method, attempt_key, gateway_ref, amount, state, captured, refunded, created_at, updated_at, hub)
			VALUES (?, ?, 'card', ?, ?, ?, 'authorizing', 0, 0, ?, ?, ?) ON CONFLICT (kiosk_id, request_id) DO NOTHING`,
			key.KioskID, key.RequestID, h.Key, h.AuthID, h.Amount, now, now, nullStr(p.Hub))
		if err != nil || n == 0 {
			return false, err // recorded meanwhile: the next sweep looks again
		}
		return true, p.abandon(ctx, key)
	case err != nil:
		return false, err
	case cur.attempt == h.Key && cur.State == "voiding":
		// A void that did not finish: no sale can record the hold, and
		// we hold the claim, so finish it now rather than wait for
		// settlement to find the row stale.
		if err := p.abandon(ctx, key); err != nil {
			return false, err
		}
		return true, nil
	case cur.attempt == h.Key && cur.State != "voided":
		return false, nil // recorded: settled as its payment is
	}
	// The request's payment is another attempt's, or this one's recorded
	// voided while the hold stayed open (a void that failed after the
	// record, or one taken for done): no sale can record this hold any
	// more. Until a void takes, every sweep finds it again.
	if err := p.gw.VoidKey(ctx, h.Key); err != nil {
		return false, fmt.Errorf("payments: void hold %s: %w", h.AuthID, err)
	}
	return true, nil
}

// attemptOf reads the purchase and the hub from an attempt's key (see
// newAttempt). Keys made before hubs were named have no hub. A key whose
// fields do not have newAttempt's shape is not a hub's: misread, its hold
// would be taken for another purchase's, and a live hold voided.
func attemptOf(attempt string) (key Key, hub string, ok bool) {
	parts := strings.SplitN(attempt, "/", 4)
	if len(parts) < 3 || validKey(Key{KioskID: parts[0], RequestID: parts[1]}) != nil || !isNonce(parts[2]) {
		return Key{}, "", false
	}
	if len(parts) == 4 {
		if hub = parts[3]; hub == "" {
			return Key{}, "", false
		}
	}
	return Key{KioskID: parts[0], RequestID: parts[1]}, hub, true
}

// validKey checks that key's ids can stand in an attempt's key, which
// attemptOf splits at slashes.
func validKey(key Key) error {
	if !protocol.ValidKioskID(key.KioskID) {
		return protocol.Errorf(protocol.CodeInvalidRequest, "kiosk id %q: want 1-32 of [A-Za-z0-9_-]", key.KioskID)
	}
	if !protocol.ValidRequestID(key.RequestID) {
		return protocol.Errorf(protocol.CodeInvalidRequest, "request_id %q: want 1-64 of [A-Za-z0-9_-]", key.RequestID)
	}
	return nil
}

// isNonce says whether s is what nonce makes: 12 lowercase hex digits.
func isNonce(s string) bool {
	if len(s) != 2*nonceBytes {
		return false
	}
	for i := range len(s) {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// settleOpen settles the open payments that match where.
func (p *Payments) settleOpen(ctx context.Context, where string, args ...any) error {
	rows, err := p.db.QueryContext(ctx, p.db.Rebind(`SELECT p.kiosk_id, p.request_id, p.state, COALESCE(s.status, '') FROM payments p
		LEFT JOIN sales s ON s.kiosk_id = p.kiosk_id AND s.request_id = p.request_id
		WHERE p.state IN ('authorizing', 'authorized', 'voiding') AND `+where), args...)
	if err != nil {
		return fmt.Errorf("payments: settle: %w", err)
	}
	type open struct {
		key   Key
		state string
		sold  bool
	}
	var opens []open
	for rows.Next() {
		var o open
		var status string
		if err := rows.Scan(&o.key.KioskID, &o.key.RequestID, &o.state, &status); err != nil {
			rows.Close()
			return err
		}
		o.sold = status == "ok"
		opens = append(opens, o)
	}
	rows.Close()
	var errs []error
	for _, o := range opens {
		settled, err := p.settleDead(ctx, o.key, o.state, o.sold)
		if err != nil {
			// One that fails must not hold up the others; it is tried again.
			errs = append(errs, fmt.Errorf("payments: settle %s/%s: %w", o.key.KioskID, o.key.RequestID, err))
			continue
		}
		if settled {
			_, topUp := fundAccount(o.key.KioskID)
			p.log.Info("open payment settled", "kiosk", o.key.KioskID, "request_id", o.key.RequestID, "was", o.state, "captured", (o.sold || topUp) && o.state == "authorized")
		}
	}
	return errors.Join(errs...)
}

// settleDead settles one open payment of a dead hub, under its request's
// claim: a live hub that took the request over settles it itself.
func (p *Payments) settleDead(ctx context.Context, key Key, state string, sold bool) (bool, error) {
	if p.Claims != nil {
		release, ok, err := p.Claims.TryTake(ctx, key.KioskID, key.RequestID)
		if err != nil || !ok {
			return false, err
		}
		defer release()
		// Read again under the claim: the taker may have settled it.
		pay, err := p.Get(ctx, key)
		if err != nil {
			return false, err
		}
		if pay.State != state {
			return false, nil
		}
		// Ours, and not being served (we hold its claim), or a dead hub's.
		if pay.hub != p.Hub {
			if alive, err := p.hubAlive(ctx, pay.hub); err != nil || alive {
				return false, err
			}
		}
	}
	var err error
	_, topUp := fundAccount(key.KioskID)
	switch {
	case state == "authorizing" || state == "voiding":
		err = p.abandon(ctx, key) // never captured: a capture follows the authorized record
	case topUp:
		// An authorized top-up may have been captured (its outcome was
		// unknown): captured again and credited, never voided.
		_, err = p.settleFund(ctx, key)
	case sold:
		err = p.Capture(ctx, key)
		if errors.Is(err, ErrNotCaptured) {
			err = p.unpaid(ctx, key, err)
		}
	default:
		err = p.Void(ctx, key)
	}
	return err == nil, err
}

// unpaid records a sold stamp whose capture the gateway refused (its hold
// expired or was voided): the stamp stands, as it was printed, and ops are
// told, to collect or write it off. The payment is recorded voided, as
// its hold is, so that settlement stops asking.
func (p *Payments) unpaid(ctx context.Context, key Key, refusal error) error {
	pay, err := p.Get(ctx, key)
	if err != nil {
		return err
	}
	if p.Alerts != nil {
		p.Alerts.Raise(ctx, alerts.CaptureRefused, "payment/"+key.KioskID+"/"+key.RequestID,
			fmt.Sprintf("kiosk %s sold %v on request %s, but the card gateway refused its capture (%v): the stamp stands unpaid", key.KioskID, pay.Amount, key.RequestID, refusal))
	}
	p.log.Error("the gateway refused a capture after the sale; the stamp stands unpaid", "kiosk", key.KioskID, "request_id", key.RequestID, "err", refusal)
	if pay.State != "authorized" {
		return nil
	}
	return p.settled(ctx, pay, "authorized", "voided")
}

// ErrOtherHub is a purchase whose payment a live hub has open: the answer
// is not final, and the same request asked again later is served.
var ErrOtherHub = protocol.Errorf(protocol.CodeOutcomeUnknown, "this purchase is being paid on another hub; ask again with the same request_id")

// hubAlive says whether hub's lease is live.
func (p *Payments) hubAlive(ctx context.Context, hub string) (bool, error) {
	return p.db.HubAlive(ctx, hub, p.now())
}

// abandon voids an attempt whose outcome is unknown. It marks the attempt
// voiding first: its sale's commit needs it authorizing, so a hub whose
// lease lapsed mid-sale can no longer record a sale on the hold voided
// here. An attempt recorded authorized meanwhile is left to be settled
// as a sale (ErrChanged).
func (p *Payments) abandon(ctx context.Context, key Key) error {
	pay, err := p.Get(ctx, key)
	if err != nil {
		return err
	}
	switch pay.State {
	case "authorizing":
		if err := p.settled(ctx, pay, "authorizing", "voiding"); err != nil {
			return err
		}
	case "voiding": // a void that did not finish
	default:
		return fmt.Errorf("payments: void attempt %s/%s: it is %s: %w", key.KioskID, key.RequestID, pay.State, ErrChanged)
	}
	if pay.Method == "account" {
		if err := p.accounts.Release(ctx, pay.AccountID, pay.attempt); err != nil {
			return err
		}
	} else if err := p.gw.VoidKey(ctx, pay.attempt); err != nil {
		return fmt.Errorf("payments: void attempt %s: %w", pay.attempt, err)
	}
	return p.settled(ctx, pay, "voiding", "voided")
}

// Totals are the payments' net: captured less refunded.
func (p *Payments) Totals(ctx context.Context) (captured, refunded protocol.Mills, err error) {
	err = p.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(captured), 0), COALESCE(SUM(refunded), 0) FROM payments`).Scan(&captured, &refunded)
	return
}

// nonceBytes is the size of an attempt's nonce (see isNonce).
const nonceBytes = 6

func nonce() string {
	b := make([]byte, nonceBytes)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullInt(v int64) any {
	if v == 0 {
		return nil
	}
	return v
}

// FundKioskID is the payments namespace of a customer's top-ups.
func FundKioskID(accountID int64) string { return fmt.Sprintf("fund-%d", accountID) }

// Fund tops up a prepaid account from a card: authorized, captured, then
// credited, each step idempotent by requestID, so a resubmitted form
// charges once. A capture whose outcome is unknown leaves the payment
// authorized, never voided (the card may have been charged): Fund then
// answers fundPending, and the same form sent again, or settlement,
// captures it again and credits it (settleFund).
func (p *Payments) Fund(ctx context.Context, accountID int64, card *Card, amount protocol.Mills, requestID string) error {
	if !protocol.ValidRequestID(requestID) {
		// It becomes part of the attempt's key, which attemptOf splits.
		return protocol.Errorf(protocol.CodeInvalidRequest, "request_id: want 1-64 of [A-Za-z0-9_-]")
	}
	if amount < 1000 || amount > 1_000_000 {
		return protocol.Errorf(protocol.CodeInvalidRequest, "amount: want $1.00 to $1,000.00")
	}
	key := Key{KioskID: FundKioskID(accountID), RequestID: requestID}
	prev, err := p.Get(ctx, key)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return fmt.Errorf("payments: fund: %w", err)
	case prev.State == "authorized" || prev.State == "captured":
		// The form sent again: finish the top-up it started.
		if prev.Amount != amount {
			return protocol.Errorf(protocol.CodeInvalidRequest, "this top-up was started for %s; open the top-up page again for another", prev.Amount)
		}
		return p.fundOutcome(ctx, key)
	}
	if _, err := p.Authorize(ctx, key, Source{Card: card}, amount); err != nil {
		return err
	}
	return p.fundOutcome(ctx, key)
}

// fundOutcome settles an authorized top-up and tells the customer.
func (p *Payments) fundOutcome(ctx context.Context, key Key) error {
	charged, err := p.settleFund(ctx, key)
	switch {
	case err != nil:
		p.log.Warn("top-up not confirmed; settlement captures and credits it", "kiosk", key.KioskID, "request_id", key.RequestID, "err", err)
		return fmt.Errorf("payments: fund %s: %w: %w", key.RequestID, fundPending(), err)
	case !charged:
		return protocol.Errorf(protocol.CodePaymentDeclined, "the card processor refused the payment; nothing was charged")
	}
	return nil
}

// fundPending is a top-up whose outcome is not known yet: the card may
// have been charged, and if it was, the balance is credited once.
func fundPending() *protocol.Error {
	return protocol.Errorf(protocol.CodeOutcomeUnknown, "your top-up is not confirmed yet: if your card was charged, the amount is added to your balance shortly; sending this same form again never charges twice")
}

// settleFund finishes an authorized top-up: captured (a repeat capture is
// a retry at the gateway), credited, then recorded captured; or, if the
// gateway refused the capture because the hold is gone, recorded voided:
// nothing was charged. It never voids a hold whose capture may have
// happened. The credit comes before the record, so an error at any step
// leaves the top-up authorized, and the next try (settlement, or the form
// sent again) does it all again, each step idempotent.
func (p *Payments) settleFund(ctx context.Context, key Key) (charged bool, err error) {
	accountID, ok := fundAccount(key.KioskID)
	if !ok {
		return false, fmt.Errorf("payments: settle top-up %s/%s: not a top-up", key.KioskID, key.RequestID)
	}
	pay, err := p.Get(ctx, key)
	if err != nil {
		return false, err
	}
	if pay.State == "authorized" {
		err := p.gw.Capture(ctx, pay.Ref, pay.Amount)
		switch {
		case errors.Is(err, ErrNotCaptured):
			// Its hold is gone (voided or expired): no money moved.
			p.log.Warn("the gateway refused a top-up's capture; nothing was charged", "kiosk", key.KioskID, "request_id", key.RequestID, "err", err)
			if err := p.settled(ctx, pay, "authorized", "voided"); err != nil && !errors.Is(err, ErrChanged) {
				return false, err
			}
		case err != nil:
			return false, fmt.Errorf("payments: capture top-up %s/%s: %w", key.KioskID, key.RequestID, err)
		default:
			if err := p.credit(ctx, accountID, pay.Amount, key.RequestID); err != nil {
				return true, fmt.Errorf("payments: credit top-up %s/%s: %w", key.KioskID, key.RequestID, err)
			}
			if err := p.settled(ctx, pay, "authorized", "captured"); err != nil && !errors.Is(err, ErrChanged) {
				return true, err
			}
		}
		if pay, err = p.Get(ctx, key); err != nil {
			return false, err
		}
	}
	switch pay.State {
	case "captured":
		// Credited above, or by whoever recorded it: crediting is
		// idempotent by its ref, and a top-up recorded captured before
		// credits came first is credited here.
		if err := p.credit(ctx, accountID, pay.Captured, key.RequestID); err != nil {
			return true, fmt.Errorf("payments: credit top-up %s/%s: %w", key.KioskID, key.RequestID, err)
		}
		return true, nil
	case "voided":
		return false, nil
	}
	return false, fmt.Errorf("payments: settle top-up %s/%s: it is %s", key.KioskID, key.RequestID, pay.State)
}

// fundAccount reads the account from a top-up's kiosk id (FundKioskID).
func fundAccount(kioskID string) (int64, bool) {
	s, ok := strings.CutPrefix(kioskID, "fund-")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 || FundKioskID(id) != kioskID {
		return 0, false
	}
	return id, true
}

// SaveCard stores a customer's card as a gateway token, for purchases the
// balance does not cover and XML requests that leave the card out. The
// number goes to the gateway only.
func (p *Payments) SaveCard(ctx context.Context, accountID int64, card *Card) error {
	t, err := p.gw.Tokenize(ctx, card)
	if err != nil {
		return fmt.Errorf("payments: save card: %w", err)
	}
	return p.accounts.SetCard(ctx, accountID, t.Token, t.Brand, t.Last4)
}

func (p *Payments) credit(ctx context.Context, accountID int64, amount protocol.Mills, requestID string) error {
	return p.accounts.Credit(ctx, accountID, amount, "fund", "card:"+requestID)
}

// creditFunds credits top-ups recorded captured whose credit may be
// missing (recorded before settleFund credited first); crediting is
// idempotent by its ref, so the ones already credited are left as they are.
func (p *Payments) creditFunds(ctx context.Context) error {
	rows, err := p.db.QueryContext(ctx, `SELECT kiosk_id, request_id, captured FROM payments WHERE kiosk_id LIKE 'fund-%' AND state = 'captured'`)
	if err != nil {
		return fmt.Errorf("payments: credit funds: %w", err)
	}
	type topUp struct {
		account int64
		req     string
		amount  protocol.Mills
	}
	var ups []topUp
	for rows.Next() {
		var kiosk string
		var t topUp
		if err := rows.Scan(&kiosk, &t.req, &t.amount); err != nil {
			rows.Close()
			return fmt.Errorf("payments: credit funds: %w", err)
		}
		var ok bool
		if t.account, ok = fundAccount(kiosk); ok {
			ups = append(ups, t)
		}
	}
	rows.Close()
	for _, t := range ups {
		if err := p.credit(ctx, t.account, t.amount, t.req); err != nil {
			return err
		}
	}
	return rows.Err()
}
