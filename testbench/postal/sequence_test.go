package postal

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	hubpostal "github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
)

// vendor keeps a vendor's registers as a hub would, signs its stamps with
// the test key (certificate 1 at the authority) and builds its reports.
type vendor struct {
	t    *testing.T
	a    *Authority
	key  *ecdsa.PrivateKey
	from time.Time

	gAR, gDR, toDate int64
	ar, dr           map[uint32]int64
	gStart           [2]int64
	start            map[uint32][2]int64

	tx, voided []hubpostal.Transaction
	bought     []hubpostal.Bought
	funded     []hubpostal.Funding
	labels     uint32
}

func newVendor(t *testing.T) *vendor {
	t.Helper()
	a, err := New("", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	key := prototest.Key()
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	a.st.Certificates = append(a.st.Certificates, Certificate{Serial: 1, Vendor: "FR", Algorithm: 3,
		PublicKeyPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))})
	return &vendor{t: t, a: a, key: key, from: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		ar: map[uint32]int64{}, dr: map[uint32]int64{}, start: map[uint32][2]int64{}}
}

// buy buys funds from the authority into the GPSD.
func (v *vendor) buy(amount int64) {
	id := fmt.Sprintf("PA-%06d", len(v.a.st.Purchases)+1)
	v.a.st.Purchases = append(v.a.st.Purchases, Purchase{ID: id, Vendor: "FR", RequestID: id, AmountMills: amount})
	v.bought = append(v.bought, hubpostal.Bought{PurchaseID: id, Amount: amount})
	v.gDR += amount
	v.toDate += amount
}

// fund moves amount from the GPSD to mpsd.
func (v *vendor) fund(mpsd uint32, amount int64) {
	if _, ok := v.ar[mpsd]; !ok {
		v.ar[mpsd], v.dr[mpsd] = 0, 0
	}
	v.gAR += amount
	v.gDR -= amount
	v.dr[mpsd] += amount
	v.funded = append(v.funded, hubpostal.Funding{MPSD: mpsd, Amount: amount, At: v.from})
}

// sell signs a stamp on mpsd and lists it in the period's report.
func (v *vendor) sell(mpsd uint32, postage int64) hubpostal.Transaction {
	v.t.Helper()
	v.ar[mpsd] += postage
	v.dr[mpsd] -= postage
	v.labels++
	in := prototest.Indicia[0].Fields
	in.MPSDSerial, in.AR, in.DR, in.Postage = mpsd, protocol.Mills(v.ar[mpsd]), protocol.Mills(v.dr[mpsd]), protocol.Mills(postage)
	in.Label = protocol.LabelSerial{Sheet: protocol.SheetSerial(0x1966F800 + (v.labels-1)/10), Position: byte((v.labels-1)%10 + 1)}
	if err := in.Sign(v.key); err != nil {
		v.t.Fatal(err)
	}
	b, err := in.MarshalBinary()
	if err != nil {
		v.t.Fatal(err)
	}
	x := hubpostal.Transaction{MPSD: mpsd, Label: in.Label.String(), RateClass: in.RateCategory, Postage: postage,
		AR: v.ar[mpsd], DR: v.dr[mpsd], At: v.from, Indicium: b, Buyer: hubpostal.Buyer{Channel: "kiosk", Kiosk: "k1", Store: "s1"}}
	v.tx = append(v.tx, x)
	return x
}

// restart starts the period's readings from the registers as they are
// now, as a hub reads them from its audit trail.
func (v *vendor) restart() {
	v.gStart = [2]int64{v.gAR, v.gDR}
	for s := range v.ar {
		v.start[s] = [2]int64{v.ar[s], v.dr[s]}
	}
}

// report is the period [from, to)'s report; the next period starts at to,
// from the registers as they are.
func (v *vendor) report(to time.Time) *hubpostal.Report {
	r := &hubpostal.Report{ReportID: fmt.Sprintf("FR-%d", to.Unix()), Vendor: "FR", Licence: DemoLicence, From: v.from, To: to,
		Transactions: append([]hubpostal.Transaction{}, v.tx...), Voided: append([]hubpostal.Transaction{}, v.voided...),
		Purchases: append([]hubpostal.Bought{}, v.bought...), Fundings: append([]hubpostal.Funding{}, v.funded...)}
	r.Registers = append(r.Registers, hubpostal.Reading{Serial: 1, Kind: "gpsd", ARStart: v.gStart[0], DRStart: v.gStart[1], AR: v.gAR, DR: v.gDR})
	for _, s := range []uint32{50000001, 50000002} {
		if _, ok := v.ar[s]; ok {
			st := v.start[s]
			r.Registers = append(r.Registers, hubpostal.Reading{Serial: s, Kind: "mpsd", ARStart: st[0], DRStart: st[1], AR: v.ar[s], DR: v.dr[s]})
		}
	}
	for _, x := range r.Transactions {
		r.Totals.Indicia++
		r.Totals.Postage += x.Postage
	}
	for _, x := range r.Voided {
		r.Totals.VoidedPostage += x.Postage
	}
	for _, b := range r.Purchases {
		r.Totals.Purchased += b.Amount
	}
	for _, f := range r.Fundings {
		r.Totals.Funded += f.Amount
	}
	r.Totals.PurchasedToDate = v.toDate
	v.tx, v.voided, v.bought, v.funded = nil, nil, nil, nil
	v.from = to
	v.restart()
	return r
}

// file posts r to the authority and returns the HTTP status and answer.
func (v *vendor) file(r *hubpostal.Report) (int, string) {
	v.t.Helper()
	body, err := json.Marshal(r)
	if err != nil {
		v.t.Fatal(err)
	}
	w := httptest.NewRecorder()
	v.a.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/reports", bytes.NewReader(body)))
	return w.Code, w.Body.String()
}

// accepted files r and fails the test unless the authority accepts it.
func (v *vendor) accepted(r *hubpostal.Report) {
	v.t.Helper()
	if code, answer := v.file(r); code != http.StatusCreated {
		v.t.Fatalf("report %s to %s: %d %s", r.From.Format(time.RFC3339), r.To.Format(time.RFC3339), code, answer)
	}
}

// refused files r and fails the test unless the authority refuses it
// (4xx, which the hub records as refused) naming check.
func (v *vendor) refused(name string, r *hubpostal.Report, check string) {
	v.t.Helper()
	code, answer := v.file(r)
	var got struct {
		Error    string   `json:"error"`
		Problems []string `json:"problems"`
	}
	json.Unmarshal([]byte(answer), &got)
	named := false
	for _, p := range got.Problems {
		named = named || strings.HasPrefix(p, check+": ")
	}
	if code/100 != 4 || !named || !strings.Contains(got.Error, check) {
		v.t.Errorf("%s: %d %s; want refused by the %s check", name, code, answer, check)
	}
}

// day is the test's period length.
const day = 24 * time.Hour

// Reports a hub makes follow on: each period from the last one's end, each
// MPSD's stamps in one chain across them, a spoiled stamp used and claimed
// in its own report, a refund claimed in a later report than its stamp.
// The authority accepts them all, and a resubmission answers the first.
func TestSequenceOfReportsAccepted(t *testing.T) {
	v := newVendor(t)
	v.buy(100_000)
	v.fund(50000001, 10_000)
	v.sell(50000001, 780)
	late := v.sell(50000001, 780)
	spoiled := v.sell(50000001, 610)
	v.voided = append(v.voided, spoiled)
	r1 := v.report(v.from.Add(day))
	v.accepted(r1)
	v.fund(50000002, 5_000) // a new MPSD, from AR 0 DR 0
	v.sell(50000002, 1_700)
	v.sell(50000001, 780)
	v.voided = append(v.voided, late) // refunded the day after
	v.accepted(v.report(v.from.Add(day)))
	v.accepted(v.report(v.from.Add(day).Add(123 * time.Nanosecond))) // a quiet day, ending within a microsecond
	v.from = v.from.Truncate(time.Microsecond)                       // where a hub, at microseconds, starts the next
	v.accepted(v.report(v.from.Add(day)))
	// Sent again: the first answer.
	if code, answer := v.file(r1); code != http.StatusOK || !strings.Contains(answer, "RPT-000001") {
		t.Fatalf("report sent again: %d %s", code, answer)
	}
	if n := len(v.a.Reports()); n != 4 {
		t.Fatalf("%d reports on record, want 4", n)
	}
}

// A report that breaks one rule of the sequence is refused, naming the
// rule; the authority's sums alone would have taken each.
func TestSequenceChecksRefuse(t *testing.T) {
	// Two accepted days, and the vendor's next day.
	setup := func(t *testing.T) (*vendor, *hubpostal.Report) {
		v := newVendor(t)
		v.buy(100_000)
		v.fund(50000001, 10_000)
		v.sell(50000001, 780)
		v.sell(50000001, 780)
		v.accepted(v.report(v.from.Add(day)))
		v.sell(50000001, 780)
		last := v.report(v.from.Add(day))
		v.accepted(last)
		return v, last
	}

	t.Run("period gap", func(t *testing.T) {
		v, _ := setup(t)
		v.from = v.from.Add(day) // a day nobody reported
		v.refused("a day skipped", v.report(v.from.Add(day)), checkPeriod)
	})
	t.Run("period overlap", func(t *testing.T) {
		v, last := setup(t)
		v.from = last.From.Add(time.Hour)
		v.refused("overlapping the last", v.report(last.To.Add(day)), checkPeriod)
	})
	t.Run("usage twice in a report", func(t *testing.T) {
		v, _ := setup(t)
		a := v.sell(50000001, 780)
		v.sell(50000001, 780)
		r := v.report(v.from.Add(day))
		r.Transactions[1] = a // the same stamp twice, the second one gone: the sums still hold
		v.refused("a stamp twice", r, checkUsage)
	})
	t.Run("usage in two reports", func(t *testing.T) {
		v, last := setup(t)
		v.sell(50000001, 780)
		r := v.report(v.from.Add(day))
		r.Transactions[0] = last.Transactions[0] // the same postage: the sums still hold
		v.refused("last period's stamp again", r, checkUsage)
	})
	t.Run("claim never used", func(t *testing.T) {
		v, _ := setup(t)
		x := v.sell(50000001, 780)
		v.tx = nil // signed, never reported
		v.restart()
		v.voided = append(v.voided, x)
		v.refused("a claim for an unreported stamp", v.report(v.from.Add(day)), checkClaim)
	})
	t.Run("chain broken", func(t *testing.T) {
		v, _ := setup(t)
		v.sell(50000001, 780)
		v.sell(50000001, 780)
		r := v.report(v.from.Add(day))
		// The first stamp's line replaced by another genuine stamp of the
		// same postage further up the register: the sum is the same.
		v.ar[50000001] += 780
		v.dr[50000001] -= 780
		r.Transactions[0] = v.sell(50000001, 780)
		v.refused("a stamp replaced", r, checkChain)
	})
	t.Run("stamp in no report", func(t *testing.T) {
		v, _ := setup(t)
		v.sell(50000001, 780) // committed late: after its period was reported
		v.tx = nil
		v.restart() // the next period's readings already include it
		v.sell(50000001, 780)
		v.refused("registers jump between reports", v.report(v.from.Add(day)), checkContinuity)
	})
	t.Run("new mpsd not at zero", func(t *testing.T) {
		v, _ := setup(t)
		v.fund(50000002, 5_000)
		v.restart() // its funding before the period, in no report
		v.funded = nil
		v.sell(50000002, 780)
		v.refused("a new MPSD already funded", v.report(v.from.Add(day)), checkContinuity)
	})
	t.Run("mpsd missing", func(t *testing.T) {
		v, _ := setup(t)
		r := v.report(v.from.Add(day))
		r.Registers = r.Registers[:1]
		v.refused("an MPSD left out", r, checkContinuity)
	})
}
