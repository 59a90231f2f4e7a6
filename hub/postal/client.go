// Package postal is the hub's client for the postal authority: it buys
// postage funds, registers signing keys for certificate serials, and (later)
// uploads reports. Every call is idempotent on the authority's side, so the
// hub retries freely.
package postal

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Client talks to the authority at BaseURL, as the vendor holding Licence:
// every call carries both.
type Client struct {
	BaseURL string
	HTTP    *http.Client
	Vendor  string
	Licence string
}

// New returns a client with a sane timeout.
func New(baseURL, vendor, licence string) *Client {
	return &Client{BaseURL: baseURL, Vendor: vendor, Licence: licence, HTTP: &http.Client{Timeout: 15 * time.Second}}
}

// Certificate is the authority's answer to a key registration.
// CertificatePEM is its signature over the key, serial, vendor and validity
// (X.509), which the hub publishes so verifiers need not trust the hub.
type Certificate struct {
	Serial         uint32 `json:"serial"`
	PublicKeyPEM   string `json:"public_key_pem"`
	CertificatePEM string `json:"certificate_pem"`
}

// Purchase is a completed fund purchase.
type Purchase struct {
	ID          string `json:"purchase_id"`
	AmountMills int64  `json:"amount_mills"`
}

// PublicKeyPEM encodes a key as the authority and /api/v1/certificates want it.
func PublicKeyPEM(pub *ecdsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("postal: public key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// RegisterKey asks for a certificate serial for pub.
func (c *Client) RegisterKey(ctx context.Context, pub *ecdsa.PublicKey) (Certificate, error) {
	p, err := PublicKeyPEM(pub)
	if err != nil {
		return Certificate{}, fmt.Errorf("postal: register key: %w", err)
	}
	var out Certificate
	err = c.post(ctx, "/v1/certificates", map[string]string{"vendor": c.Vendor, "licence": c.Licence, "public_key_pem": p}, &out)
	if err == nil && out.CertificatePEM != "" {
		err = certifies(out, pub)
	}
	if err != nil {
		return Certificate{}, fmt.Errorf("postal: register key: %w", err)
	}
	return out, nil
}

// certifies checks that the authority's certificate is for pub and serial:
// the hub publishes it beside the key.
func certifies(c Certificate, pub *ecdsa.PublicKey) error {
	blk, _ := pem.Decode([]byte(c.CertificatePEM))
	if blk == nil || blk.Type != "CERTIFICATE" {
		return fmt.Errorf("certificate %d: not a PEM certificate", c.Serial)
	}
	x, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return fmt.Errorf("certificate %d: %w", c.Serial, err)
	}
	if k, ok := x.PublicKey.(*ecdsa.PublicKey); !ok || !k.Equal(pub) {
		return fmt.Errorf("certificate %d is for another key", c.Serial)
	}
	if !x.SerialNumber.IsUint64() || x.SerialNumber.Uint64() != uint64(c.Serial) {
		return fmt.Errorf("certificate %d carries serial %s", c.Serial, x.SerialNumber)
	}
	return nil
}

// BuyFunds buys amount mills of postage. requestID makes a retry safe.
func (c *Client) BuyFunds(ctx context.Context, requestID string, amountMills int64) (Purchase, error) {
	var out Purchase
	body := map[string]any{"vendor": c.Vendor, "licence": c.Licence, "request_id": requestID, "amount_mills": amountMills}
	if err := c.post(ctx, "/v1/funds", body, &out); err != nil {
		return Purchase{}, fmt.Errorf("postal: buy funds %s: %w", requestID, err)
	}
	if out.AmountMills != amountMills {
		return Purchase{}, fmt.Errorf("postal: buy funds %s: authority sold %d mills, asked %d", requestID, out.AmountMills, amountMills)
	}
	return out, nil
}

// Anchors returns, for each of the vendor's audit chains, the furthest head
// the authority holds; none before any report carried one.
func (c *Client) Anchors(ctx context.Context) ([]Anchor, error) {
	var out []Anchor
	if err := c.do(ctx, http.MethodGet, "/v1/anchors?vendor="+url.QueryEscape(c.Vendor)+"&licence="+url.QueryEscape(c.Licence), nil, &out); err != nil {
		return nil, fmt.Errorf("postal: anchors: %w", err)
	}
	return out, nil
}

func (c *Client) post(ctx context.Context, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, path, b, out)
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return &RefusedError{Status: resp.StatusCode, Answer: string(bytes.TrimSpace(answer))}
	}
	return json.Unmarshal(answer, out)
}

// RefusedError is the authority's answer to a call it did not accept: a
// report that does not add up, a licence that is not the vendor's. An
// unreachable authority is another error.
type RefusedError struct {
	Status int
	Answer string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Answer)
}

// Report is the vendor's periodic report to the postal authority: every
// indicium issued in the period, refund claims for voided ones, the funds
// bought and moved, and the register readings at both ends of the period.
// The authority re-checks every total and signature.
type Report struct {
	ReportID     string        `json:"report_id"` // the vendor's id; resubmitting is safe
	Vendor       string        `json:"vendor"`
	Licence      string        `json:"licence"` // the vendor's single postal licence
	From         time.Time     `json:"from"`
	To           time.Time     `json:"to"`
	Transactions []Transaction `json:"transactions"`
	Voided       []Transaction `json:"voided"` // refund claims: registers never run backwards
	Purchases    []Bought      `json:"purchases"`
	Fundings     []Funding     `json:"fundings"`
	Registers    []Reading     `json:"registers"`
	// Events are the period's device events the authority is told of:
	// kiosks lost or stolen (39 CFR 501 wants them reported), retired.
	Events []Event `json:"events,omitempty"`
	// AuditHeads are each audit chain's last entry in the period. The
	// authority keeps them, so a chain rewritten or reset in the vendor's
	// database no longer holds the head it was told of.
	AuditHeads []AuditHead `json:"audit_heads,omitempty"`
	Totals     Totals      `json:"totals"`
}

// AuditHead is one entry of one of the hub's audit chains: the chain (each
// PSD's serial; 0 is the single chain of hubs before one per PSD), the
// entry's place in it, and its chained hash (hex SHA-256).
type AuditHead struct {
	Chain uint32 `json:"chain"`
	Seq   int64  `json:"seq"`
	Hash  string `json:"hash"`
}

// Anchor is the head of one audit chain in the vendor's accepted report
// that reaches furthest into it, as the authority holds it.
type Anchor struct {
	AuditHead
	ReportRef string    `json:"report_ref"`
	Received  time.Time `json:"received"`
}

// Event kinds a report carries: status and security events of the period.
const (
	EventKioskLost      = "kiosk_lost"      // a kiosk lost or stolen (39 CFR 501)
	EventKioskRetired   = "kiosk_retired"   // a kiosk taken out of the fleet
	EventPSDLocked      = "psd_locked"      // a PSD locked on tamper: a control code did not match
	EventTamper         = "tamper"          // another tamper finding: a ledger check violation
	EventKeyActivated   = "key_activated"   // an indicium signing key put in service (a rotation)
	EventKeyRetired     = "key_retired"     // a signing key retired by a rotation
	EventKeyCompromised = "key_compromised" // a signing key marked compromised (Detail: since when)
)

// EventKinds are the kinds an authority accepts.
var EventKinds = []string{EventKioskLost, EventKioskRetired, EventPSDLocked, EventTamper, EventKeyActivated, EventKeyRetired, EventKeyCompromised}

// Event is one status or security event.
type Event struct {
	Kind    string    `json:"kind"`    // one of EventKinds
	Subject string    `json:"subject"` // kiosk/ID, psd/SERIAL, key/SERIAL, ledger
	Detail  string    `json:"detail"`
	At      time.Time `json:"at"`
}

// Transaction is one indicium.
type Transaction struct {
	MPSD      uint32    `json:"mpsd"`
	Label     string    `json:"label"`
	RateClass string    `json:"rate_class"`
	Postage   int64     `json:"postage_mills"`
	AR        int64     `json:"ar"`
	DR        int64     `json:"dr"`
	At        time.Time `json:"at"`
	Indicium  []byte    `json:"indicium"`
	Reason    string    `json:"reason,omitempty"` // why it was voided
	Buyer     Buyer     `json:"buyer"`
}

// Buyer says who bought an indicium, as the patent's reports identify the
// users: the kiosk and its store, and the customer account when one paid.
// A web customer buys through the portal or the XML API.
type Buyer struct {
	Channel string `json:"channel"` // kiosk or web
	Kiosk   string `json:"kiosk,omitempty"`
	Store   string `json:"store,omitempty"`
	Account int64  `json:"account,omitempty"`
}

// Bought is a completed fund purchase.
type Bought struct {
	PurchaseID string `json:"purchase_id"`
	Amount     int64  `json:"amount_mills"`
}

// Funding is a GPSD-to-MPSD transfer.
type Funding struct {
	MPSD   uint32    `json:"mpsd"`
	Amount int64     `json:"amount_mills"`
	At     time.Time `json:"at"`
}

// Reading is a PSD's registers at the start and end of the period.
type Reading struct {
	Serial  uint32 `json:"serial"`
	Kind    string `json:"kind"`
	ARStart int64  `json:"ar_start"`
	DRStart int64  `json:"dr_start"`
	AR      int64  `json:"ar"`
	DR      int64  `json:"dr"`
}

// Totals restate the lists; the authority recomputes them.
type Totals struct {
	Indicia         int   `json:"indicia"`
	Postage         int64 `json:"postage_mills"`
	VoidedPostage   int64 `json:"voided_postage_mills"`
	Purchased       int64 `json:"purchased_mills"`
	PurchasedToDate int64 `json:"purchased_to_date_mills"`
	Funded          int64 `json:"funded_mills"`
}

// SubmitReport uploads a report and returns the authority's reference.
func (c *Client) SubmitReport(ctx context.Context, r *Report) (string, error) {
	if r.Licence == "" {
		r.Licence = c.Licence
	}
	var out struct {
		Ref string `json:"ref"`
	}
	if err := c.post(ctx, "/v1/reports", r, &out); err != nil {
		return "", fmt.Errorf("postal: submit report %s: %w", r.ReportID, err)
	}
	return out.Ref, nil
}
