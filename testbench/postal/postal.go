// Package postal simulates the postal authority: it sells postage funds to
// the vendor, issues certificate serials for the vendor's public keys, and
// keeps what it was told, so tests can compare the vendor's ledger with the
// authority's records. State is kept in one JSON file, rewritten and synced
// on every change.
package postal

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	hubpostal "github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/protocol"
)

// Certificate is a registered public key. CertificatePEM is the
// authority's signature over it: an X.509 certificate for the key, with the
// serial, the vendor (as organization) and the validity dates.
type Certificate struct {
	Serial         uint32    `json:"serial"`
	Vendor         string    `json:"vendor"`
	Algorithm      int       `json:"algorithm"`
	PublicKeyPEM   string    `json:"public_key_pem"`
	IssuedAt       time.Time `json:"issued_at"`
	NotBefore      time.Time `json:"not_before"`
	NotAfter       time.Time `json:"not_after"`
	CertificatePEM string    `json:"certificate_pem"`
}

// Purchase is one sale of postage funds to a vendor.
type Purchase struct {
	ID          string    `json:"purchase_id"`
	Vendor      string    `json:"vendor"`
	RequestID   string    `json:"request_id"`
	AmountMills int64     `json:"amount_mills"`
	At          time.Time `json:"at"`
}

type state struct {
	AuthorityKey  string        `json:"authority_key_pem"` // the simulator's signing key
	AuthorityCert string        `json:"authority_certificate_pem"`
	Certificates  []Certificate `json:"certificates"`
	Purchases     []Purchase    `json:"purchases"`
	Reports       []Filed       `json:"reports"`
	// Licences are the postal licence numbers issued, by vendor.
	Licences map[string]string `json:"licences,omitempty"`
}

// Filed is an accepted report.
type Filed struct {
	Ref      string    `json:"ref"`
	ReportID string    `json:"report_id"`
	Vendor   string    `json:"vendor"`
	Licence  string    `json:"licence"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	Indicia  int       `json:"indicia"`
	Postage  int64     `json:"postage_mills"`
	Received time.Time `json:"received"`
	// Events are the devices the vendor declared lost, stolen or retired.
	Events []hubpostal.Event `json:"events,omitempty"`
	// AuditHeads anchor the vendor's audit chains.
	AuditHeads []hubpostal.AuditHead `json:"audit_heads,omitempty"`
	// Claims are the indicia the report claimed back, by meter and
	// ascending register ("MPSD/AR"): each may be claimed once.
	Claims []string `json:"claims,omitempty"`
	// Usage are the indicia the report declared issued, by meter and
	// ascending register ("MPSD/AR"): each may be reported once.
	Usage []string `json:"usage,omitempty"`
	// Registers are the PSDs' readings the report gave: the next report
	// must start each PSD where this one left it. A report accepted
	// before the authority kept them has none.
	Registers []hubpostal.Reading `json:"registers,omitempty"`
}

// claimKey names a claimed indicium in Filed.Claims.
func claimKey(t hubpostal.Transaction) string { return fmt.Sprintf("%d/%d", t.MPSD, t.AR) }

// DemoLicence is the postal licence the demo, the tests and the benchmarks
// run their hubs under.
const DemoLicence = "PVS-94544-0001"

// Authority is the simulated postal authority.
type Authority struct {
	path string
	log  *slog.Logger
	mu   sync.Mutex
	st   state
	sig  *signer
	// Refuse makes fund purchases fail, to test a vendor that cannot buy.
	refuse bool
	asked  int // fund purchases asked for, sold or not
}

// New loads the authority's state from path, or starts empty, and writes
// its public key beside it (AuthorityFile). An empty path keeps state in
// memory only.
func New(path string, log *slog.Logger) (*Authority, error) {
	a := &Authority{path: path, log: log}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("postal: load: %w", err)
		}
		if err == nil {
			if err := json.Unmarshal(b, &a.st); err != nil {
				return nil, fmt.Errorf("postal: load %s: %w", path, err)
			}
		}
	}
	created, err := a.loadSigner()
	if err != nil {
		return nil, err
	}
	if created {
		if err := a.save(); err != nil {
			return nil, fmt.Errorf("postal: save: %w", err)
		}
	}
	if err := a.writeAuthorityFile(); err != nil {
		return nil, fmt.Errorf("postal: %w", err)
	}
	return a, nil
}

// IssueLicence records licence as vendor's: every later call of the
// vendor's must carry it. A vendor with none on record has the first
// licence it presents recorded (the simulator's stand-in for the
// authority's licensing office).
func (a *Authority) IssueLicence(vendor, licence string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.Licences == nil {
		a.st.Licences = map[string]string{}
	}
	a.st.Licences[vendor] = licence
	return a.save()
}

// Licence is the licence on record for vendor, or "".
func (a *Authority) Licence(vendor string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.Licences[vendor]
}

// licensed checks that a call names vendor's licence; the caller holds a.mu.
func (a *Authority) licensed(w http.ResponseWriter, vendor, licence string) bool {
	if licence == "" {
		httpError(w, http.StatusForbidden, "licence: every call names the vendor's postal licence")
		return false
	}
	have, ok := a.st.Licences[vendor]
	if !ok {
		if a.st.Licences == nil {
			a.st.Licences = map[string]string{}
		}
		a.st.Licences[vendor] = licence
		if err := a.save(); err != nil {
			delete(a.st.Licences, vendor)
			httpError(w, http.StatusInternalServerError, "save: %v", err)
			return false
		}
		a.log.Info("licence recorded", "vendor", vendor, "licence", licence)
		return true
	}
	if have != licence {
		a.log.Warn("call refused: not the vendor's licence", "vendor", vendor, "licence", licence)
		httpError(w, http.StatusForbidden, "licence %q is not vendor %s's", licence, vendor)
		return false
	}
	return true
}

// SetRefuseFunds makes later fund purchases fail (or succeed again).
func (a *Authority) SetRefuseFunds(refuse bool) {
	a.mu.Lock()
	a.refuse = refuse
	a.mu.Unlock()
}

// FundsAsked counts the fund purchases asked for, sold or not.
func (a *Authority) FundsAsked() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.asked
}

// TotalFunds returns the sum of funds sold to vendor.
func (a *Authority) TotalFunds(vendor string) int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	var t int64
	for _, p := range a.st.Purchases {
		if p.Vendor == vendor {
			t += p.AmountMills
		}
	}
	return t
}

// Handler serves the authority's API.
func (a *Authority) Handler() http.Handler {
	r := chi.NewRouter()
	r.Post("/v1/certificates", a.postCertificate)
	r.Get("/v1/certificates", a.getCertificates)
	r.Post("/v1/funds", a.postFunds)
	r.Get("/v1/funds", a.getFunds)
	r.Post("/v1/reports", a.postReport)
	r.Get("/v1/reports", a.getReports)
	r.Get("/v1/anchors", a.getAnchors)
	r.Get("/v1/authority", a.getAuthority)
	return r
}

func (a *Authority) postCertificate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Vendor       string `json:"vendor"`
		Licence      string `json:"licence"`
		PublicKeyPEM string `json:"public_key_pem"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10)).Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, "bad json: %v", err)
		return
	}
	blk, _ := pem.Decode([]byte(req.PublicKeyPEM))
	if blk == nil || blk.Type != "PUBLIC KEY" {
		httpError(w, http.StatusBadRequest, "public_key_pem: want a PEM PUBLIC KEY")
		return
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if ec, ok := k.(*ecdsa.PublicKey); err != nil || !ok || ec.Curve != elliptic.P256() {
		httpError(w, http.StatusBadRequest, "public key: want ECDSA P-256")
		return
	}
	if len(req.Vendor) != 2 {
		httpError(w, http.StatusBadRequest, "vendor: want two characters")
		return
	}
	pub := k.(*ecdsa.PublicKey)
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.licensed(w, req.Vendor, req.Licence) {
		return
	}
	for i, c := range a.st.Certificates {
		if c.PublicKeyPEM != req.PublicKeyPEM {
			continue
		}
		if c.CertificatePEM == "" { // registered before the authority signed them
			if err := a.certify(&c, pub); err != nil {
				httpError(w, http.StatusInternalServerError, "%v", err)
				return
			}
			a.st.Certificates[i] = c
			if err := a.save(); err != nil {
				httpError(w, http.StatusInternalServerError, "save: %v", err)
				return
			}
		}
		writeJSON(w, http.StatusOK, c) // the same key asks again: same serial
		return
	}
	c := Certificate{Serial: uint32(len(a.st.Certificates) + 1), Vendor: req.Vendor, Algorithm: 3,
		PublicKeyPEM: req.PublicKeyPEM, IssuedAt: time.Now().UTC()}
	if err := a.certify(&c, pub); err != nil {
		httpError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	a.st.Certificates = append(a.st.Certificates, c)
	if err := a.save(); err != nil {
		a.st.Certificates = a.st.Certificates[:len(a.st.Certificates)-1]
		httpError(w, http.StatusInternalServerError, "save: %v", err)
		return
	}
	a.log.Info("certificate issued", "serial", c.Serial, "vendor", c.Vendor)
	writeJSON(w, http.StatusCreated, c)
}

func (a *Authority) getCertificates(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	writeJSON(w, http.StatusOK, a.st.Certificates)
}

func (a *Authority) postFunds(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Vendor      string `json:"vendor"`
		Licence     string `json:"licence"`
		RequestID   string `json:"request_id"`
		AmountMills int64  `json:"amount_mills"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10)).Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, "bad json: %v", err)
		return
	}
	if req.AmountMills <= 0 || req.RequestID == "" || len(req.Vendor) != 2 {
		httpError(w, http.StatusBadRequest, "want vendor, request_id and a positive amount_mills")
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.asked++
	if !a.licensed(w, req.Vendor, req.Licence) {
		return
	}
	for _, p := range a.st.Purchases {
		if p.RequestID == req.RequestID && p.Vendor == req.Vendor {
			if p.AmountMills != req.AmountMills {
				httpError(w, http.StatusConflict, "request_id %s was used for %d mills", p.RequestID, p.AmountMills)
				return
			}
			writeJSON(w, http.StatusOK, p) // a retry after a lost answer
			return
		}
	}
	if a.refuse {
		httpError(w, http.StatusServiceUnavailable, "fund sales are suspended")
		return
	}
	p := Purchase{ID: fmt.Sprintf("PA-%06d", len(a.st.Purchases)+1), Vendor: req.Vendor, RequestID: req.RequestID,
		AmountMills: req.AmountMills, At: time.Now().UTC()}
	a.st.Purchases = append(a.st.Purchases, p)
	if err := a.save(); err != nil {
		a.st.Purchases = a.st.Purchases[:len(a.st.Purchases)-1]
		httpError(w, http.StatusInternalServerError, "save: %v", err)
		return
	}
	a.log.Info("funds sold", "purchase", p.ID, "vendor", p.Vendor, "amount_mills", p.AmountMills)
	writeJSON(w, http.StatusCreated, p)
}

func (a *Authority) getFunds(w http.ResponseWriter, r *http.Request) {
	vendor := r.URL.Query().Get("vendor")
	a.mu.Lock()
	defer a.mu.Unlock()
	out := struct {
		Purchases  []Purchase `json:"purchases"`
		TotalMills int64      `json:"total_mills"`
	}{Purchases: []Purchase{}}
	for _, p := range a.st.Purchases {
		if vendor == "" || p.Vendor == vendor {
			out.Purchases = append(out.Purchases, p)
			out.TotalMills += p.AmountMills
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// Reports returns the accepted reports.
func (a *Authority) Reports() []Filed {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Filed(nil), a.st.Reports...)
}

func (a *Authority) getReports(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.Reports())
}

func (a *Authority) postReport(w http.ResponseWriter, r *http.Request) {
	var rep hubpostal.Report
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 256<<20)).Decode(&rep); err != nil {
		httpError(w, http.StatusBadRequest, "bad json: %v", err)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.licensed(w, rep.Vendor, rep.Licence) {
		return
	}
	for _, f := range a.st.Reports {
		if f.ReportID == rep.ReportID && f.Vendor == rep.Vendor {
			writeJSON(w, http.StatusOK, map[string]string{"ref": f.Ref})
			return
		}
	}
	if problems := a.audit(&rep); len(problems) > 0 {
		a.log.Warn("report refused", "report", rep.ReportID, "problems", problems)
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"error": refusal(problems), "problems": problems})
		return
	}
	f := Filed{Ref: fmt.Sprintf("RPT-%06d", len(a.st.Reports)+1), ReportID: rep.ReportID, Vendor: rep.Vendor, Licence: rep.Licence, From: rep.From, To: rep.To,
		Indicia: rep.Totals.Indicia, Postage: rep.Totals.Postage, Received: time.Now().UTC(), Events: rep.Events, AuditHeads: rep.AuditHeads}
	for _, x := range rep.Voided {
		f.Claims = append(f.Claims, claimKey(x))
	}
	for _, x := range rep.Transactions {
		f.Usage = append(f.Usage, claimKey(x))
	}
	f.Registers = rep.Registers
	a.st.Reports = append(a.st.Reports, f)
	if err := a.save(); err != nil {
		a.st.Reports = a.st.Reports[:len(a.st.Reports)-1]
		httpError(w, http.StatusInternalServerError, "save: %v", err)
		return
	}
	a.log.Info("report accepted", "ref", f.Ref, "vendor", f.Vendor, "indicia", f.Indicia)
	writeJSON(w, http.StatusCreated, map[string]string{"ref": f.Ref})
}

// Anchors are, for each of vendor's audit chains, the head in its accepted
// reports that reaches furthest into it, by chain.
func (a *Authority) Anchors(vendor string) []hubpostal.Anchor {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.anchors(vendor)
}

// anchors is Anchors; the caller holds a.mu.
func (a *Authority) anchors(vendor string) []hubpostal.Anchor {
	best := map[uint32]hubpostal.Anchor{}
	for _, f := range a.st.Reports {
		if f.Vendor != vendor {
			continue
		}
		for _, h := range f.AuditHeads {
			if b, ok := best[h.Chain]; !ok || h.Seq > b.Seq {
				best[h.Chain] = hubpostal.Anchor{AuditHead: h, ReportRef: f.Ref, Received: f.Received}
			}
		}
	}
	out := make([]hubpostal.Anchor, 0, len(best))
	for _, c := range slices.Sorted(maps.Keys(best)) {
		out = append(out, best[c])
	}
	return out
}

// getAnchors answers an empty list when the vendor has no anchor yet.
func (a *Authority) getAnchors(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.licensed(w, q.Get("vendor"), q.Get("licence")) {
		return
	}
	writeJSON(w, http.StatusOK, a.anchors(q.Get("vendor")))
}

// audit re-checks a report the way an inspector would: its totals, the
// purchases against the authority's own records, the register equations,
// each MPSD's movement against its transactions, and every signature
// against the certificates the authority issued. The caller holds a.mu.
func (a *Authority) audit(r *hubpostal.Report) []string {
	var bad []string
	fail := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	// Every indicium names its buyer: a kiosk and its store, or a web
	// customer's account.
	for _, x := range r.Transactions {
		switch b := x.Buyer; {
		case b.Channel == "kiosk" && b.Kiosk != "" && b.Store != "":
		case b.Channel == "web" && b.Account > 0:
		default:
			fail("indicium on label %s: buyer %+v is neither a kiosk in a store nor a customer account", x.Label, b)
		}
	}
	// Status and security events are of known kinds, name their subject
	// and fall in the period.
	for _, e := range r.Events {
		if !slices.Contains(hubpostal.EventKinds, e.Kind) || e.Subject == "" || e.At.Before(r.From) || !e.At.Before(r.To) {
			fail("event %+v: unknown kind, no subject, or outside the period", e)
		}
	}
	keys := map[uint32]*ecdsa.PublicKey{}
	for _, c := range a.st.Certificates {
		if c.Vendor != r.Vendor {
			continue
		}
		if blk, _ := pem.Decode([]byte(c.PublicKeyPEM)); blk != nil {
			if k, err := x509.ParsePKIXPublicKey(blk.Bytes); err == nil {
				keys[c.Serial], _ = k.(*ecdsa.PublicKey)
			}
		}
	}
	// The audit heads, chain by chain: the same entry keeps its hash, a
	// later period never ends earlier in a chain (a reset chain starts
	// again at 1), and a chain once reported is never missing later.
	heads := map[uint32]hubpostal.AuditHead{}
	for _, h := range r.AuditHeads {
		if _, dup := heads[h.Chain]; dup {
			fail("audit head: chain %d given twice", h.Chain)
		}
		heads[h.Chain] = h
	}
	for _, f := range a.st.Reports {
		if f.Vendor != r.Vendor {
			continue
		}
		for _, fh := range f.AuditHeads {
			h, ok := heads[fh.Chain]
			switch {
			case !ok && !f.To.After(r.To):
				fail("audit head: chain %d, which report %s anchored at entry %d, is missing: the chain was cut", fh.Chain, f.Ref, fh.Seq)
			case !ok:
			case fh.Seq == h.Seq && fh.Hash != h.Hash:
				fail("audit head: entry %d of chain %d differs from the one report %s gave: the chain was rewritten", h.Seq, h.Chain, f.Ref)
			case fh.Seq > h.Seq && !f.To.After(r.To):
				fail("audit head: entry %d of chain %d ends a period after report %s, which ended at entry %d: the chain was reset", h.Seq, h.Chain, f.Ref, fh.Seq)
			}
		}
	}
	var postage, voided, bought, funded int64
	perMPSD := map[uint32]int64{}
	for i, t := range r.Transactions {
		postage += t.Postage
		perMPSD[t.MPSD] += t.Postage
		in, err := protocol.ParseIndicium(t.Indicium)
		if err == nil && keys[in.CertSerial] != nil {
			_, err = protocol.VerifyIndicium(t.Indicium, keys[in.CertSerial])
		} else if err == nil {
			err = fmt.Errorf("no certificate %d", in.CertSerial)
		}
		if err != nil {
			fail("transaction %d (%s): indicium does not verify: %v", i, t.Label, err)
			continue
		}
		if int64(in.Postage) != t.Postage || in.MPSDSerial != t.MPSD || int64(in.AR) != t.AR || int64(in.DR) != t.DR || in.Label.String() != t.Label {
			fail("transaction %d (%s): the line disagrees with its indicium", i, t.Label)
		}
	}
	// A refund claim is for a genuine indicium, of this period or an
	// earlier one (a stamp refunded after its period was reported), and
	// each indicium is claimed back once.
	claimed := map[string]string{}
	for _, f := range a.st.Reports {
		if f.Vendor == r.Vendor {
			for _, k := range f.Claims {
				claimed[k] = f.Ref
			}
		}
	}
	for i, t := range r.Voided {
		voided += t.Postage
		in, err := protocol.ParseIndicium(t.Indicium)
		if err == nil && keys[in.CertSerial] != nil {
			_, err = protocol.VerifyIndicium(t.Indicium, keys[in.CertSerial])
		} else if err == nil {
			err = fmt.Errorf("no certificate %d", in.CertSerial)
		}
		switch {
		case err != nil:
			fail("refund claim %d (%s): indicium does not verify: %v", i, t.Label, err)
		case int64(in.Postage) != t.Postage || in.MPSDSerial != t.MPSD || int64(in.AR) != t.AR || in.Label.String() != t.Label:
			fail("refund claim %d (%s): the line disagrees with its indicium", i, t.Label)
		case claimed[claimKey(t)] != "":
			fail("refund claim %d (%s): mpsd %d AR %d was claimed back before, in %s", i, t.Label, t.MPSD, t.AR, claimed[claimKey(t)])
		}
		claimed[claimKey(t)] = "this report"
	}
	a.sequence(r, fail)
	sold := map[string]int64{}
	var soldTotal int64
	for _, p := range a.st.Purchases {
		if p.Vendor == r.Vendor {
			sold[p.ID] = p.AmountMills
			soldTotal += p.AmountMills
		}
	}
	for _, b := range r.Purchases {
		bought += b.Amount
		if amt, ok := sold[b.PurchaseID]; !ok || amt != b.Amount {
			fail("purchase %s of %d mills is not in the authority's records", b.PurchaseID, b.Amount)
		}
	}
	fundedMPSD := map[uint32]int64{}
	for _, f := range r.Fundings {
		funded += f.Amount
		fundedMPSD[f.MPSD] += f.Amount
	}
	t := r.Totals
	if t.Indicia != len(r.Transactions) || t.Postage != postage || t.VoidedPostage != voided || t.Purchased != bought || t.Funded != funded {
		fail("totals do not match the lists")
	}
	if t.PurchasedToDate > soldTotal {
		fail("purchased to date %d exceeds the %d mills the authority sold", t.PurchasedToDate, soldTotal)
	}
	var gpsd *hubpostal.Reading
	var mpsdSum int64
	for i := range r.Registers {
		rd := &r.Registers[i]
		if rd.Kind == "gpsd" {
			gpsd = rd
			continue
		}
		mpsdSum += rd.AR + rd.DR
		if rd.AR-rd.ARStart != perMPSD[rd.Serial] {
			fail("mpsd %d: AR moved %d but its transactions total %d", rd.Serial, rd.AR-rd.ARStart, perMPSD[rd.Serial])
		}
		if rd.DR-rd.DRStart != fundedMPSD[rd.Serial]-perMPSD[rd.Serial] {
			fail("mpsd %d: DR moved %d, funding %d less postage %d", rd.Serial, rd.DR-rd.DRStart, fundedMPSD[rd.Serial], perMPSD[rd.Serial])
		}
	}
	if gpsd == nil {
		fail("no GPSD reading")
		return bad
	}
	if gpsd.AR+gpsd.DR != t.PurchasedToDate {
		fail("equation 1: GPSD AR %d + DR %d != purchased to date %d", gpsd.AR, gpsd.DR, t.PurchasedToDate)
	}
	if gpsd.AR != mpsdSum {
		fail("equation 2: GPSD AR %d != sum of MPSD AR+DR %d", gpsd.AR, mpsdSum)
	}
	if gpsd.AR-gpsd.ARStart != funded || gpsd.DR-gpsd.DRStart != bought-funded {
		fail("GPSD movement does not match purchases %d and fundings %d", bought, funded)
	}
	return bad
}

// The checks that hold a report to the ones accepted before it, each
// named at the start of the problems it finds.
const (
	checkPeriod     = "period"     // periods follow on from one another
	checkUsage      = "usage"      // each indicium reported once
	checkClaim      = "claim"      // each refund claim for an indicium reported
	checkChain      = "chain"      // each MPSD's indicia chain from its starting register
	checkContinuity = "continuity" // each PSD starts where the last report left it
)

// refusal is the error a refused report is answered with: the sequence
// checks its problems name, if any.
func refusal(problems []string) string {
	var names []string
	for _, p := range problems {
		name, _, _ := strings.Cut(p, ":")
		switch name {
		case checkPeriod, checkUsage, checkClaim, checkChain, checkContinuity:
			if !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	if len(names) == 0 {
		return "report does not add up"
	}
	return "report does not add up: failed the " + strings.Join(names, ", ") + " check(s)"
}

// sequence holds a report to the vendor's reports accepted before it, as
// an inspector reading them one after another would: its period starts
// where the last one ended; every indicium is reported as used once, in
// one report, and claimed back at most once, in the same report or a later
// one (a spoiled indicium is both used and claimed in its own report);
// each MPSD's indicia, in ascending register order, step from the
// register it started the period at by their postage, with none missing;
// and each PSD starts the period with the registers the last report ended
// it at, or at zero when no report had it before. Funding moves only the
// descending register, which the movement checks in audit cover. Reports
// accepted before the authority kept usage and registers are taken on
// trust for what they lack. The caller holds a.mu.
func (a *Authority) sequence(r *hubpostal.Report, fail func(string, ...any)) {
	var last *Filed
	used := map[string]string{}
	regs := map[uint32]hubpostal.Reading{}
	regsFrom := map[uint32]string{}
	usageKnown := true
	for i := range a.st.Reports {
		f := &a.st.Reports[i]
		if f.Vendor != r.Vendor {
			continue
		}
		last = f
		for _, k := range f.Usage {
			used[k] = f.Ref
		}
		if f.Indicia > 0 && len(f.Usage) == 0 {
			usageKnown = false
		}
		for _, rd := range f.Registers {
			regs[rd.Serial], regsFrom[rd.Serial] = rd, f.Ref
		}
	}
	// (d) The period.
	if !r.From.Before(r.To) {
		fail("%s: from %s is not before to %s", checkPeriod, r.From.Format(time.RFC3339Nano), r.To.Format(time.RFC3339Nano))
	}
	// To the microsecond, the resolution hubs keep periods at.
	if last != nil && r.From.UnixMicro() != last.To.UnixMicro() {
		fail("%s: the period starts at %s, but the last report accepted, %s, ended at %s: periods must follow on without gap or overlap",
			checkPeriod, r.From.Format(time.RFC3339Nano), last.Ref, last.To.Format(time.RFC3339Nano))
	}
	// (a) Usage: once in this report, never in an earlier one.
	here := map[string]bool{}
	for i, t := range r.Transactions {
		k := claimKey(t)
		switch {
		case here[k]:
			fail("%s: transaction %d (%s): mpsd %d AR %d is reported twice in this report", checkUsage, i, t.Label, t.MPSD, t.AR)
		case used[k] != "":
			fail("%s: transaction %d (%s): mpsd %d AR %d was reported before, in %s", checkUsage, i, t.Label, t.MPSD, t.AR, used[k])
		}
		here[k] = true
	}
	// A refund claim is for an indicium reported used, here or before.
	if usageKnown {
		for i, t := range r.Voided {
			if k := claimKey(t); !here[k] && used[k] == "" {
				fail("%s: refund claim %d (%s): mpsd %d AR %d was never reported as used", checkClaim, i, t.Label, t.MPSD, t.AR)
			}
		}
	}
	// (b) Each MPSD's indicia chain from its starting register.
	readings := map[uint32]hubpostal.Reading{}
	for _, rd := range r.Registers {
		if rd.Kind != "gpsd" {
			readings[rd.Serial] = rd
		}
	}
	byMPSD := map[uint32][]hubpostal.Transaction{}
	for _, t := range r.Transactions {
		byMPSD[t.MPSD] = append(byMPSD[t.MPSD], t)
	}
	for _, serial := range slices.Sorted(maps.Keys(byMPSD)) {
		rd, ok := readings[serial]
		if !ok {
			fail("%s: mpsd %d issued indicia but has no register reading", checkChain, serial)
			continue
		}
		ts := byMPSD[serial]
		slices.SortStableFunc(ts, func(x, y hubpostal.Transaction) int { return cmp.Compare(x.AR, y.AR) })
		at, whole := rd.ARStart, true
		for _, t := range ts {
			if t.AR != at+t.Postage {
				fail("%s: mpsd %d: the indicium on %s has AR %d, but after AR %d its postage %d makes AR %d (an indicium missing, repeated or out of the period)",
					checkChain, serial, t.Label, t.AR, at, t.Postage, at+t.Postage)
				whole = false
				break
			}
			at = t.AR
		}
		if whole && at != rd.AR {
			fail("%s: mpsd %d: its indicia end at AR %d, its register at AR %d", checkChain, serial, at, rd.AR)
		}
	}
	// (c) Each PSD starts where the last report left it.
	if last != nil && len(last.Registers) == 0 {
		return
	}
	seen := map[uint32]bool{}
	for _, rd := range r.Registers {
		seen[rd.Serial] = true
		p, ok := regs[rd.Serial]
		switch {
		case !ok && (rd.ARStart != 0 || rd.DRStart != 0):
			fail("%s: %s %d starts at AR %d DR %d, but no report had it before: a new PSD starts at AR 0 DR 0",
				checkContinuity, rd.Kind, rd.Serial, rd.ARStart, rd.DRStart)
		case ok && (rd.ARStart != p.AR || rd.DRStart != p.DR):
			fail("%s: %s %d starts at AR %d DR %d, but %s ended it at AR %d DR %d",
				checkContinuity, rd.Kind, rd.Serial, rd.ARStart, rd.DRStart, regsFrom[rd.Serial], p.AR, p.DR)
		}
	}
	for _, serial := range slices.Sorted(maps.Keys(regs)) {
		if !seen[serial] {
			fail("%s: %s %d, which %s gave, has no reading", checkContinuity, regs[serial].Kind, serial, regsFrom[serial])
		}
	}
}

// save writes the state file atomically; the caller holds a.mu.
func (a *Authority) save() error {
	if a.path == "" {
		return nil
	}
	b, err := json.MarshalIndent(a.st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(a.path), 0o755); err != nil {
		return err
	}
	tmp := a.path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, a.path)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, map[string]string{"error": fmt.Sprintf(format, args...)})
}
