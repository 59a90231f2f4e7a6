// Package cards simulates the card payment gateway: it authorizes,
// captures, voids and refunds, lists the holds it has open with the keys
// they were asked under (POST /v1/holds/search, in pages of up to 500: pass
// "limit", and the answer's "next" as "after" for the next page), keeps totals that tests
// compare with the hub's books, and never stores a card number.
//
// Test tokens (what a kiosk's payment terminal hands over):
//
//	tok_approve (and any other tok_...)  approved
//	tok_decline                          declined
//	tok_insufficient                     insufficient funds
//	tok_timeout                          no answer within 30 s
//
// Test card numbers (what the patent's XML API passes on), any future expiry:
//
//	4242 4242 4242 4242, 5555 5555 5555 4444   approved
//	4000 0000 0000 0002                        declined
//	4000 0000 0000 9995                        insufficient funds
//	4000 0000 0000 0119                        no answer within 30 s
package cards

import (
	"cmp"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
)

// Gateway is the simulated card gateway.
type Gateway struct {
	log *slog.Logger
	mu  sync.Mutex
	// by authorization id
	auths map[string]*auth
	// the authorized ones, neither captured nor voided, by id: a search
	// reads these, not every authorization made
	open map[string]*auth
	// idempotency keys
	byKey     map[string]string
	refundKey map[string]bool
	seq       int
	captured  int64
	refunded  int64
}

type auth struct {
	ID       string    `json:"auth_id"`
	Amount   int64     `json:"amount_mills"`
	Brand    string    `json:"brand"`
	Last4    string    `json:"last4"`
	State    string    `json:"state"` // authorized, captured, voided
	Captured int64     `json:"captured_mills"`
	Refunded int64     `json:"refunded_mills"`
	key      string    // the merchant's idempotency key, listed by searchHolds
	made     time.Time // when it was approved
}

// New returns a gateway.
func New(log *slog.Logger) *Gateway {
	return &Gateway{log: log, auths: map[string]*auth{}, open: map[string]*auth{}, byKey: map[string]string{}, refundKey: map[string]bool{}}
}

// Totals are the money the gateway moved.
type Totals struct {
	Captured int64 `json:"captured_mills"`
	Refunded int64 `json:"refunded_mills"`
	Open     int   `json:"open_authorizations"`
}

// Totals returns what was captured and refunded, and how many
// authorizations are neither captured nor voided.
func (g *Gateway) Totals() Totals {
	g.mu.Lock()
	defer g.mu.Unlock()
	return Totals{Captured: g.captured, Refunded: g.refunded, Open: len(g.open)}
}

// Handler serves the gateway API.
func (g *Gateway) Handler() http.Handler {
	r := chi.NewRouter()
	r.Post("/v1/authorize", g.authorize)
	r.Post("/v1/tokens", g.tokenize)
	r.Post("/v1/capture", g.capture)
	r.Post("/v1/captures", g.captures)
	r.Post("/v1/void", g.void)
	r.Post("/v1/refund", g.refund)
	r.Post("/v1/holds/search", g.searchHolds)
	r.Get("/v1/totals", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, g.Totals()) })
	return r
}

type authorizeReq struct {
	Key    string `json:"key"`
	Amount int64  `json:"amount_mills"`
	Token  string `json:"token,omitempty"`
	Card   *struct {
		Number string `json:"number"`
		Exp    string `json:"exp"`
		Name   string `json:"name"`
	} `json:"card,omitempty"`
}

// testCard is what the gateway does with a test card number, and its brand.
func testCard(n string) (outcome, brand string) {
	outcome, brand = "approve", "visa"
	if strings.HasPrefix(n, "5") {
		brand = "mastercard"
	}
	switch n {
	case "4000000000000002":
		outcome = "decline"
	case "4000000000009995":
		outcome = "insufficient"
	case "4000000000000119":
		outcome = "timeout"
	}
	return outcome, brand
}

// tokenize stores a card for later payments and answers its token, as a
// gateway's vault does: the vendor keeps the token, never the number.
func (g *Gateway) tokenize(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Card *struct{ Number, Exp, Name string } `json:"card"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<10)).Decode(&req); err != nil || req.Card == nil || len(req.Card.Number) < 12 {
		writeJSON(w, 400, map[string]string{"code": "invalid", "message": "want a card"})
		return
	}
	n := req.Card.Number
	outcome, brand := testCard(n)
	writeJSON(w, 200, map[string]string{"token": "tok_" + outcome + "_" + rand.Text()[:12], "brand": brand, "last4": n[len(n)-4:]})
}

func (g *Gateway) authorize(w http.ResponseWriter, r *http.Request) {
	var req authorizeReq
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<10)).Decode(&req); err != nil || req.Amount <= 0 || req.Key == "" {
		writeJSON(w, 400, map[string]string{"code": "invalid", "message": "want key, amount_mills and a token or card"})
		return
	}
	outcome, brand, last4 := "approve", "visa", "4242"
	switch {
	case req.Token != "":
		if !strings.HasPrefix(req.Token, "tok_") {
			writeJSON(w, 400, map[string]string{"code": "invalid", "message": "unknown token"})
			return
		}
		outcome, _, _ = strings.Cut(strings.TrimPrefix(req.Token, "tok_"), "_") // tok_approve, or a stored card's tok_approve_X
	case req.Card != nil:
		n := req.Card.Number
		if len(n) < 4 {
			writeJSON(w, 400, map[string]string{"code": "invalid", "message": "card number"})
			return
		}
		last4 = n[len(n)-4:]
		outcome, brand = testCard(n)
	default:
		writeJSON(w, 400, map[string]string{"code": "invalid", "message": "want a token or a card"})
		return
	}
	switch outcome {
	case "decline":
		writeJSON(w, 402, map[string]any{"code": "declined", "message": "do not honor"})
		return
	case "insufficient":
		writeJSON(w, 402, map[string]any{"code": "insufficient_funds", "message": "insufficient funds", "missing_mills": req.Amount})
		return
	case "timeout":
		select {
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if id, ok := g.byKey[req.Key]; ok {
		writeJSON(w, 200, g.auths[id]) // a retry
		return
	}
	g.seq++
	a := &auth{ID: fmt.Sprintf("auth_%06d", g.seq), Amount: req.Amount, Brand: brand, Last4: last4, State: "authorized",
		key: req.Key, made: time.Now()}
	g.auths[a.ID] = a
	g.open[a.ID] = a
	g.byKey[req.Key] = a.ID
	writeJSON(w, 200, a)
}

// searchHolds lists the authorizations neither captured nor voided that
// were approved at least older_than_ms ago, with the keys they were asked
// under, as an acquirer's search of open authorizations does: a merchant
// finds the holds it made but never recorded.
func (g *Gateway) searchHolds(w http.ResponseWriter, r *http.Request) {
	var req struct {
		OlderThanMS int64  `json:"older_than_ms"`
		After       string `json:"after"` // the last auth_id of the page before
		Limit       int    `json:"limit"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<10)).Decode(&req); err != nil || req.OlderThanMS < 0 || req.Limit < 0 {
		writeJSON(w, 400, map[string]string{"code": "invalid", "message": "want older_than_ms, and a limit and after to page"})
		return
	}
	if req.Limit == 0 || req.Limit > maxHoldsPage {
		req.Limit = maxHoldsPage
	}
	type hold struct {
		AuthID string `json:"auth_id"`
		Key    string `json:"key"`
		Amount int64  `json:"amount_mills"`
	}
	before := time.Now().Add(-time.Duration(req.OlderThanMS) * time.Millisecond)
	holds := []hold{}
	g.mu.Lock()
	for _, a := range g.open {
		if !a.made.After(before) && (req.After == "" || cmpID(a.ID, req.After) > 0) {
			holds = append(holds, hold{AuthID: a.ID, Key: a.key, Amount: a.Amount})
		}
	}
	g.mu.Unlock()
	// Pages in auth_id order: a hold opened or closed between pages is
	// found, or not, by the next search.
	slices.SortFunc(holds, func(a, b hold) int { return cmpID(a.AuthID, b.AuthID) })
	next := ""
	if len(holds) > req.Limit {
		holds = holds[:req.Limit]
		next = holds[len(holds)-1].AuthID
	}
	writeJSON(w, 200, map[string]any{"holds": holds, "next": next})
}

// cmpID orders authorization ids as they were made (auth_999999 before
// auth_1000000).
func cmpID(a, b string) int {
	if len(a) != len(b) {
		return cmp.Compare(len(a), len(b))
	}
	return strings.Compare(a, b)
}

// maxHoldsPage bounds a page of the holds search, as an acquirer's does.
const maxHoldsPage = 500

type opReq struct {
	AuthID string `json:"auth_id"`
	Key    string `json:"key"`
	Amount int64  `json:"amount_mills"`
}

func (g *Gateway) op(w http.ResponseWriter, r *http.Request, fn func(a *auth, req opReq) (int, string)) {
	var req opReq
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<10)).Decode(&req); err != nil {
		writeJSON(w, 400, map[string]string{"code": "invalid", "message": err.Error()})
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if req.AuthID == "" {
		req.AuthID = g.byKey[req.Key]
	}
	a, ok := g.auths[req.AuthID]
	if !ok {
		writeJSON(w, 404, map[string]string{"code": "unknown", "message": "no such authorization"})
		return
	}
	status, msg := fn(a, req)
	if status != 200 {
		writeJSON(w, status, map[string]string{"code": "refused", "message": msg})
		return
	}
	writeJSON(w, 200, a)
}

func (g *Gateway) capture(w http.ResponseWriter, r *http.Request) {
	g.op(w, r, g.captureOne)
}

func (g *Gateway) captureOne(a *auth, req opReq) (int, string) {
	switch {
	case a.State == "captured" && a.Captured == req.Amount:
		return 200, "" // a retry
	case a.State != "authorized" || req.Amount <= 0 || req.Amount > a.Amount:
		return 409, "cannot capture " + a.State
	}
	a.State, a.Captured = "captured", req.Amount
	delete(g.open, a.ID)
	g.captured += req.Amount
	return 200, ""
}

// maxBatch is the most captures one batch call takes.
const maxBatch = 256

// captures settles a batch of captures, as acquirers settle the day's
// captures in one file: each is done or refused on its own, with the
// status a single capture would have had.
func (g *Gateway) captures(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Captures []opReq `json:"captures"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBatch<<8)).Decode(&req); err != nil || len(req.Captures) == 0 || len(req.Captures) > maxBatch {
		writeJSON(w, 400, map[string]string{"code": "invalid", "message": fmt.Sprintf("want 1 to %d captures", maxBatch)})
		return
	}
	type result struct {
		AuthID  string `json:"auth_id"`
		Status  int    `json:"status"`
		Message string `json:"message,omitempty"`
	}
	out := make([]result, len(req.Captures))
	g.mu.Lock()
	for i, c := range req.Captures {
		out[i] = result{AuthID: c.AuthID, Status: 404, Message: "no such authorization"}
		if a, ok := g.auths[c.AuthID]; ok {
			out[i].Status, out[i].Message = g.captureOne(a, c)
		}
	}
	g.mu.Unlock()
	writeJSON(w, 200, map[string]any{"results": out})
}

func (g *Gateway) void(w http.ResponseWriter, r *http.Request) {
	g.op(w, r, func(a *auth, req opReq) (int, string) {
		switch a.State {
		case "voided":
			return 200, ""
		case "captured":
			return 409, "captured; refund it instead"
		}
		a.State = "voided"
		delete(g.open, a.ID)
		return 200, ""
	})
}

func (g *Gateway) refund(w http.ResponseWriter, r *http.Request) {
	g.op(w, r, func(a *auth, req opReq) (int, string) {
		if req.Key != "" && g.refundKey[req.Key] {
			return 200, "" // a retry
		}
		if a.State != "captured" || req.Amount <= 0 || a.Refunded+req.Amount > a.Captured {
			return 409, "cannot refund that much"
		}
		a.Refunded += req.Amount
		g.refunded += req.Amount
		if req.Key != "" {
			g.refundKey[req.Key] = true
		}
		return 200, ""
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
