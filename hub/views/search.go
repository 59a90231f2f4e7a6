package views

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/frank-postage/frank/hub/stock"
	"github.com/frank-postage/frank/protocol"
)

// Search kinds: what a console search looks a sale up by.
const (
	ByLabel   = "label"   // a label serial, 1966-F8CF-07
	ByMeter   = "meter"   // a meter number, FR2N00000001: that meter's latest sales
	ByRequest = "request" // a sale's request id, on any kiosk
	ByLogin   = "login"   // a portal customer's login: their web sales and the kiosk sales their account paid
	ByCard    = "card"    // the card's last four digits and the approval code on the receipt
	ByAuto    = "auto"    // whichever of the above the text looks like
)

// SearchKinds are the kinds Search takes.
var SearchKinds = []string{ByAuto, ByLabel, ByMeter, ByRequest, ByLogin, ByCard}

// ErrQuery is a search whose text cannot be of the kind asked for.
var ErrQuery = errors.New("views: search")

// Filter limits the console's searches, exports and shift figures to the
// stores an operator may see, and to a kiosk and a time window.
type Filter struct {
	// All is every store (vendor ops); otherwise only Stores. A web
	// customer's sale is the web store's.
	All    bool
	Stores []string
	Kiosk  string    // one kiosk, or "" for every kiosk of the stores
	From   time.Time // from this instant; zero: from the first sale
	To     time.Time // up to, not including, this one; zero: until now
}

// Sale is one sale with everything the counter asks about it: its stamps,
// the payment (never more of a card than brand, last four and approval),
// the remedies its labels got and the money refunded.
type Sale struct {
	KioskID   string         `json:"kiosk_id"`
	Store     string         `json:"store"`
	RequestID string         `json:"request_id"`
	Status    string         `json:"status"`
	At        time.Time      `json:"at"`
	Total     protocol.Mills `json:"total_mills"`
	// Customer is the portal account's login, for a web sale or a kiosk
	// sale paid from the account.
	Customer string          `json:"customer,omitempty"`
	Stamps   []Stamp         `json:"stamps"`
	Payment  *Payment        `json:"payment,omitempty"` // none for a free reprint
	Remedies []Remedy        `json:"remedies"`
	Refunds  []PaymentRefund `json:"refunds"`
	// Matched is the kind of search that found the sale.
	Matched string `json:"matched"`
}

// Stamp is one indicium of a sale.
type Stamp struct {
	Label      string         `json:"label"`
	RateClass  string         `json:"rate_class"`
	Postage    protocol.Mills `json:"postage_mills"`
	Meter      string         `json:"meter"`
	State      string         `json:"state"` // issued, printed, voided
	VoidReason string         `json:"void_reason,omitempty"`
	ReprintOf  string         `json:"reprint_of,omitempty"`
}

// Payment is how a sale was paid.
type Payment struct {
	Method   string         `json:"method"` // card, account
	Brand    string         `json:"brand,omitempty"`
	Last4    string         `json:"last4,omitempty"`
	Approval string         `json:"approval,omitempty"` // the gateway's authorization id, printed on the receipt
	State    string         `json:"state"`
	Amount   protocol.Mills `json:"amount_mills"`
	Captured protocol.Mills `json:"captured_mills"`
	Refunded protocol.Mills `json:"refunded_mills"`
}

// Remedy is what a label of the sale got: a reprint or a refund.
type Remedy struct {
	Label    string         `json:"label"`
	Kind     string         `json:"kind"` // reprint, refund
	NewLabel string         `json:"new_label,omitempty"`
	Amount   protocol.Mills `json:"amount_mills"`
	At       time.Time      `json:"at"`
	By       string         `json:"by,omitempty"` // the operator, for a counter refund
	Reason   string         `json:"reason,omitempty"`
}

// PaymentRefund is money given back on the sale's payment.
type PaymentRefund struct {
	Ref    string         `json:"ref"`
	Amount protocol.Mills `json:"amount_mills"`
	At     time.Time      `json:"at"`
}

var meterPattern = regexp.MustCompile(`^[A-Z0-9]{2}[0-9][A-Z][0-9]{8}$`)

// Recognise says which kinds of search q may be: a label serial, a meter
// number and a card reference look like nothing else; other text may be a
// request id or a customer's login, and both are tried.
func Recognise(q string) []string {
	q = strings.TrimSpace(q)
	switch {
	case q == "":
		return nil
	case isLabel(q):
		return []string{ByLabel}
	case meterPattern.MatchString(strings.ToUpper(q)):
		return []string{ByMeter}
	}
	if _, _, ok := cardRef(q); ok {
		return []string{ByCard}
	}
	return []string{ByRequest, ByLogin}
}

func isLabel(q string) bool {
	_, err := protocol.ParseLabelSerial(q)
	return err == nil
}

// cardRef reads "4242 auth_000123" (either order; a comma, slash or
// spaces between): the last four digits and the approval code.
func cardRef(q string) (last4, approval string, ok bool) {
	f := strings.FieldsFunc(q, func(r rune) bool { return r == ' ' || r == ',' || r == '/' || r == '\t' })
	if len(f) != 2 {
		return "", "", false
	}
	four := func(s string) bool { _, err := strconv.Atoi(s); return len(s) == 4 && err == nil }
	switch {
	case four(f[0]) && !four(f[1]):
		return f[0], f[1], true
	case four(f[1]) && !four(f[0]):
		return f[1], f[0], true
	}
	return "", "", false
}

// Search finds sales by what the counter has in hand, newest first, at
// most limit, within f's stores and kiosk (its window is not used: a
// customer brings an old stamp too). kind is one of SearchKinds; a text
// that cannot be of that kind is ErrQuery.
func (v *Views) Search(ctx context.Context, kind, q string, f Filter, limit int) ([]Sale, error) {
	q = strings.TrimSpace(q)
	kinds := []string{kind}
	if kind == ByAuto || kind == "" {
		if kinds = Recognise(q); kinds == nil {
			return nil, fmt.Errorf("%w: type a label serial, meter number, request id, customer login, or last four digits and approval code", ErrQuery)
		}
	}
	type key struct{ kiosk, request string }
	seen := map[key]bool{}
	var out []Sale
	for _, k := range kinds {
		keys, err := v.candidates(ctx, k, q, f, limit)
		if err != nil {
			return nil, err
		}
		for _, c := range keys {
			if seen[key{c[0], c[1]}] {
				continue
			}
			seen[key{c[0], c[1]}] = true
			s, err := v.saleDetail(ctx, c[0], c[1], f)
			if err != nil {
				return nil, err
			}
			if s != nil {
				s.Matched = k
				out = append(out, *s)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b Sale) int { return b.At.Compare(a.At) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// storeOf is a sale's store in SQL: its kiosk's, or the web store for a
// web customer's (their kiosk id is web-ACCOUNT, in no kiosks row).
func storeOf(kioskCol string) string {
	return `COALESCE(k.store, CASE WHEN ` + kioskCol + ` LIKE 'web-%' THEN '` + stock.WebStore + `' ELSE '' END)`
}

// scope is the SQL that keeps rows to f's stores and kiosk, storeExpr and
// kioskCol naming a row's store and kiosk.
func scope(f Filter, storeExpr, kioskCol string) (string, []any) {
	var q string
	var args []any
	if !f.All {
		if len(f.Stores) == 0 {
			return ` AND 1 = 0`, nil
		}
		q = ` AND ` + storeExpr + ` IN (` + strings.TrimSuffix(strings.Repeat("?, ", len(f.Stores)), ", ") + `)`
		for _, s := range f.Stores {
			args = append(args, s)
		}
	}
	if f.Kiosk != "" {
		q += ` AND ` + kioskCol + ` = ?`
		args = append(args, f.Kiosk)
	}
	return q, args
}

// window is the SQL that keeps rows whose time column is in f's window.
func window(f Filter, col string) (string, []any) {
	var q string
	var args []any
	if !f.From.IsZero() {
		q += ` AND ` + col + ` >= ?`
		args = append(args, f.From.UnixMicro())
	}
	if !f.To.IsZero() {
		q += ` AND ` + col + ` < ?`
		args = append(args, f.To.UnixMicro())
	}
	return q, args
}

// candidates lists the (kiosk, request) of sales that match q as kind,
// newest first, each query on an index.
func (v *Views) candidates(ctx context.Context, kind, q string, f Filter, limit int) ([][2]string, error) {
	var query string
	var args []any
	switch kind {
	case ByLabel:
		l, err := protocol.ParseLabelSerial(q)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrQuery, err)
		}
		sc, sargs := scope(f, storeOf("i.kiosk_id"), "i.kiosk_id")
		query = `SELECT i.kiosk_id, i.request_id FROM indicia i LEFT JOIN kiosks k ON k.kiosk_id = i.kiosk_id WHERE i.label = ?` + sc + ` ORDER BY i.id DESC LIMIT ?`
		args = append(append([]any{l.String()}, sargs...), limit)
	case ByMeter:
		rest, ok := strings.CutPrefix(strings.ToUpper(q), v.MeterPrefix)
		n, err := strconv.ParseUint(rest, 10, 32)
		if !ok || len(rest) != 8 || err != nil {
			return nil, fmt.Errorf("%w: meter number %q: want %s and 8 digits", ErrQuery, q, v.MeterPrefix)
		}
		// A sale's stamps may come from one meter: read stamps until
		// limit sales are found (indicia_mpsd serves it newest first).
		sc, sargs := scope(f, storeOf("i.kiosk_id"), "i.kiosk_id")
		query = `SELECT i.kiosk_id, i.request_id FROM indicia i LEFT JOIN kiosks k ON k.kiosk_id = i.kiosk_id WHERE i.mpsd = ?` + sc + ` ORDER BY i.id DESC`
		args = append([]any{n}, sargs...)
	case ByRequest:
		sc, sargs := scope(f, storeOf("s.kiosk_id"), "s.kiosk_id")
		query = `SELECT s.kiosk_id, s.request_id FROM sales s LEFT JOIN kiosks k ON k.kiosk_id = s.kiosk_id WHERE s.request_id = ?` + sc + ` ORDER BY s.created_at DESC LIMIT ?`
		args = append(append([]any{q}, sargs...), limit)
	case ByLogin:
		var id int64
		err := v.db.QueryRowContext(ctx, v.db.Rebind(`SELECT id FROM accounts WHERE login = ?`), q).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("views: search by login: %w", err)
		}
		// Web sales are under the customer's web kiosk id; kiosk sales
		// paid from the account carry it on their payment.
		sc, sargs := scope(f, storeOf("p.kiosk_id"), "p.kiosk_id")
		wsc, wargs := scope(f, storeOf("s.kiosk_id"), "s.kiosk_id")
		query = `SELECT kiosk_id, request_id FROM (
			SELECT p.kiosk_id, p.request_id, p.created_at AS at FROM payments p LEFT JOIN kiosks k ON k.kiosk_id = p.kiosk_id WHERE p.account_id = ?` + sc + `
			UNION SELECT s.kiosk_id, s.request_id, s.created_at AS at FROM sales s LEFT JOIN kiosks k ON k.kiosk_id = s.kiosk_id WHERE s.kiosk_id = ?` + wsc + `) AS u
			ORDER BY at DESC LIMIT ?`
		args = append([]any{id}, sargs...)
		args = append(append(append(args, "web-"+strconv.FormatInt(id, 10)), wargs...), limit)
	case ByCard:
		last4, approval, ok := cardRef(q)
		if !ok {
			return nil, fmt.Errorf("%w: card reference %q: want the last four digits and the approval code, like 4242 auth_000123", ErrQuery, q)
		}
		sc, sargs := scope(f, storeOf("p.kiosk_id"), "p.kiosk_id")
		query = `SELECT p.kiosk_id, p.request_id FROM payments p LEFT JOIN kiosks k ON k.kiosk_id = p.kiosk_id WHERE p.gateway_ref = ? AND p.last4 = ?` + sc + ` LIMIT ?`
		args = append(append([]any{approval, last4}, sargs...), limit)
	default:
		return nil, fmt.Errorf("%w: kind %q: want one of %s", ErrQuery, kind, strings.Join(SearchKinds, ", "))
	}
	rows, err := v.db.QueryContext(ctx, v.db.Rebind(query), args...)
	if err != nil {
		return nil, fmt.Errorf("views: search by %s: %w", kind, err)
	}
	defer rows.Close()
	var out [][2]string
	seen := map[[2]string]bool{}
	for rows.Next() && len(out) < limit {
		var c [2]string
		if err := rows.Scan(&c[0], &c[1]); err != nil {
			return nil, fmt.Errorf("views: search by %s: %w", kind, err)
		}
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("views: search by %s: %w", kind, err)
	}
	return out, nil
}

// Sale returns one sale with its stamps, payment, remedies and refunds,
// or nil if there is none in f's stores.
func (v *Views) Sale(ctx context.Context, kioskID, requestID string, f Filter) (*Sale, error) {
	return v.saleDetail(ctx, kioskID, requestID, f)
}

func (v *Views) saleDetail(ctx context.Context, kioskID, requestID string, f Filter) (*Sale, error) {
	fail := func(err error) (*Sale, error) {
		return nil, fmt.Errorf("views: sale %s/%s: %w", kioskID, requestID, err)
	}
	sc, sargs := scope(f, storeOf("s.kiosk_id"), "s.kiosk_id")
	s := &Sale{Stamps: []Stamp{}, Remedies: []Remedy{}, Refunds: []PaymentRefund{}}
	var at int64
	err := v.db.QueryRowContext(ctx, v.db.Rebind(`SELECT s.kiosk_id, `+storeOf("s.kiosk_id")+`, s.request_id, s.status, s.total, s.created_at
		FROM sales s LEFT JOIN kiosks k ON k.kiosk_id = s.kiosk_id WHERE s.kiosk_id = ? AND s.request_id = ?`+sc),
		append([]any{kioskID, requestID}, sargs...)...).Scan(&s.KioskID, &s.Store, &s.RequestID, &s.Status, &s.Total, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return fail(err)
	}
	s.At = time.UnixMicro(at)
	rows, err := v.db.QueryContext(ctx, v.db.Rebind(`SELECT label, rate_class, postage, mpsd, state, COALESCE(void_reason, ''), COALESCE(reprint_of, '')
		FROM indicia WHERE kiosk_id = ? AND request_id = ? ORDER BY id`), kioskID, requestID)
	if err != nil {
		return fail(err)
	}
	var labels []any
	for rows.Next() {
		var st Stamp
		var mpsd uint32
		if err := rows.Scan(&st.Label, &st.RateClass, &st.Postage, &mpsd, &st.State, &st.VoidReason, &st.ReprintOf); err != nil {
			rows.Close()
			return fail(err)
		}
		st.Meter = v.meter(mpsd)
		s.Stamps = append(s.Stamps, st)
		labels = append(labels, st.Label)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	var p Payment
	var account sql.NullInt64
	err = v.db.QueryRowContext(ctx, v.db.Rebind(`SELECT method, COALESCE(brand, ''), COALESCE(last4, ''), COALESCE(gateway_ref, ''), state, amount, captured, refunded, account_id
		FROM payments WHERE kiosk_id = ? AND request_id = ?`), kioskID, requestID).
		Scan(&p.Method, &p.Brand, &p.Last4, &p.Approval, &p.State, &p.Amount, &p.Captured, &p.Refunded, &account)
	switch {
	case err == nil:
		s.Payment = &p
	case !errors.Is(err, sql.ErrNoRows):
		return fail(err)
	}
	if id, ok := strings.CutPrefix(kioskID, "web-"); ok && !account.Valid {
		n, err := strconv.ParseInt(id, 10, 64)
		account = sql.NullInt64{Int64: n, Valid: err == nil}
	}
	if account.Valid {
		err := v.db.QueryRowContext(ctx, v.db.Rebind(`SELECT login FROM accounts WHERE id = ?`), account.Int64).Scan(&s.Customer)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fail(err)
		}
	}
	if len(labels) > 0 {
		// A remedy is the label's (its primary key), whichever request asked.
		rows, err := v.db.QueryContext(ctx, v.db.Rebind(`SELECT label, kind, COALESCE(new_label, ''), amount, at, COALESCE(by_operator, ''), COALESCE(reason, '')
			FROM remedies WHERE label IN (`+strings.TrimSuffix(strings.Repeat("?, ", len(labels)), ", ")+`) ORDER BY at, label`), labels...)
		if err != nil {
			return fail(err)
		}
		for rows.Next() {
			var r Remedy
			var at int64
			if err := rows.Scan(&r.Label, &r.Kind, &r.NewLabel, &r.Amount, &at, &r.By, &r.Reason); err != nil {
				rows.Close()
				return fail(err)
			}
			r.At = time.UnixMicro(at)
			s.Remedies = append(s.Remedies, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fail(err)
		}
	}
	rows, err = v.db.QueryContext(ctx, v.db.Rebind(`SELECT ref, amount, created_at FROM payment_refunds WHERE kiosk_id = ? AND request_id = ? ORDER BY created_at, ref`), kioskID, requestID)
	if err != nil {
		return fail(err)
	}
	defer rows.Close()
	for rows.Next() {
		var r PaymentRefund
		var at int64
		if err := rows.Scan(&r.Ref, &r.Amount, &at); err != nil {
			return fail(err)
		}
		r.At = time.UnixMicro(at)
		s.Refunds = append(s.Refunds, r)
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	return s, nil
}

// meter is the printed meter number of an MPSD.
func (v *Views) meter(mpsd uint32) string {
	if len(v.MeterPrefix) != 4 {
		return strconv.FormatUint(uint64(mpsd), 10)
	}
	return protocol.MeterNumber(v.MeterPrefix[:2], v.MeterPrefix[2:], mpsd)
}
