// Package ca is the hub's device certificate authority. It issues each
// kiosk a short-lived client certificate naming its kiosk id and store,
// from a CSR whose key never left the kiosk; it issues the hubs their
// broker-client and server certificates; and it revokes, keeping a signed
// CRL for brokers, signed again only when it must be. The CA's key lives in the HSM (PKCS#11, or the soft
// store in development) and signs through a crypto.Signer; its certificate
// is in the store, shared by every hub on the database.
package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/frank-postage/frank/hsm"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// KeyLabel is the CA key's label in the HSM, unless Config names another.
const KeyLabel = "frank-device-ca"

// Errors.
var (
	ErrNoCA   = errors.New("ca: no device CA; run hub ca init")
	ErrExists = errors.New("ca: the device CA exists already")
	// ErrNotDue and ErrRenewedRecently refuse a renewal, in a *NotYet.
	ErrNotDue          = errors.New("the certificate is not due for renewal")
	ErrRenewedRecently = errors.New("the kiosk was issued a certificate within the hour")
	// ErrRevoked refuses a certificate to a retired kiosk, or a renewal
	// presenting a revoked certificate.
	ErrRevoked = errors.New("ca: the kiosk was retired or its certificate revoked")
)

// NotYet is a renewal refused until At.
type NotYet struct {
	Err error // ErrNotDue or ErrRenewedRecently
	At  time.Time
}

func (e *NotYet) Error() string {
	return fmt.Sprintf("ca: renew: %v; not before %s", e.Err, e.At.UTC().Format(time.RFC3339))
}

func (e *NotYet) Unwrap() error { return e.Err }

// RenewEvery is the least time between two certificates of one kiosk by
// renewal. A kiosk renews once in a certificate's life, and when an answer
// was lost it asks again at its next hourly check, by then allowed.
const RenewEvery = time.Hour

// backdate is how far before its issue a certificate's life starts: for a
// clock a little behind.
const backdate = 5 * time.Minute

// hubBackdate is how far back a hub's certificate's life starts at most:
// for a kiosk's clock far behind (IssueHub).
const hubBackdate = 365 * 24 * time.Hour

// Certificate kinds, as device_certs records them.
const (
	KindKiosk  = "kiosk"
	KindHub    = "hub"    // a hub's client certificate for the broker
	KindServer = "server" // a hub's TLS server certificate
)

// Config sets lifetimes. Zero values take the defaults noted.
type Config struct {
	KeyLabel string        // the CA key's label in the HSM; default KeyLabel
	Vendor   string        // the O of every certificate; default "Frank"
	KioskTTL time.Duration // a kiosk certificate's lifetime; default 30 days
	HubTTL   time.Duration // a hub's client and server certificates; default 30 days
	Now      func() time.Time
}

// CA is the device CA.
type CA struct {
	db   *store.DB
	keys hsm.Module
	open func() (hsm.Session, error)
	cfg  Config

	mu     sync.Mutex // one signature at a time: an HSM session is not shared
	label  string     // the CA key's, as the store records it
	sess   hsm.Session
	signer crypto.Signer
	cert   *x509.Certificate
	pem    []byte

	crlMu sync.Mutex // held over CRL, so that concurrent requests sign once
	crl   *signedCRL // the last list signed or read, guarded by crlMu
}

// New returns the CA on db; Load or Init makes it usable.
func New(db *store.DB, keys hsm.Module, open func() (hsm.Session, error), cfg Config) *CA {
	if cfg.KeyLabel == "" {
		cfg.KeyLabel = KeyLabel
	}
	if cfg.Vendor == "" {
		cfg.Vendor = "Frank"
	}
	if cfg.KioskTTL == 0 {
		cfg.KioskTTL = 30 * 24 * time.Hour
	}
	if cfg.HubTTL == 0 {
		cfg.HubTTL = 30 * 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &CA{db: db, keys: keys, open: open, cfg: cfg}
}

// KioskTTL is the lifetime of a kiosk certificate.
func (c *CA) KioskTTL() time.Duration { return c.cfg.KioskTTL }

// HubTTL is the life of the hubs' certificates from their issue.
func (c *CA) HubTTL() time.Duration { return c.cfg.HubTTL }

// Init creates the CA: a P-256 key in the HSM and a self-signed
// certificate good for ten years.
func (c *CA) Init(ctx context.Context) error {
	if err := c.Load(ctx); err == nil {
		return ErrExists
	} else if !errors.Is(err, ErrNoCA) {
		return err
	}
	pub, err := c.keys.GenerateSigningKey(c.cfg.KeyLabel)
	if err != nil {
		return fmt.Errorf("ca: init: %w", err)
	}
	c.mu.Lock()
	c.label = c.cfg.KeyLabel
	sg, err := c.signerLocked(pub)
	c.mu.Unlock()
	if err != nil {
		return err
	}
	now := c.cfg.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: c.cfg.Vendor + " device CA", Organization: []string{c.cfg.Vendor}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, sg)
	if err != nil {
		return fmt.Errorf("ca: init: %w", err)
	}
	p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if _, err := c.db.ExecContext(ctx, c.db.Rebind(`INSERT INTO device_ca (id, key_label, cert_pem, created_at) VALUES (1, ?, ?, ?)`),
		c.cfg.KeyLabel, string(p), now.UnixMicro()); err != nil {
		if store.IsConflict(err) {
			return ErrExists
		}
		return fmt.Errorf("ca: init: %w", err)
	}
	return c.Load(ctx)
}

// Load reads the CA's certificate and opens its signer.
func (c *CA) Load(ctx context.Context) error {
	var p, label string
	err := c.db.QueryRowContext(ctx, `SELECT cert_pem, key_label FROM device_ca WHERE id = 1`).Scan(&p, &label)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNoCA
	}
	if err != nil {
		return fmt.Errorf("ca: load: %w", err)
	}
	cert, err := ParseCertPEM([]byte(p))
	if err != nil {
		return fmt.Errorf("ca: load: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cert, c.pem, c.label = cert, []byte(p), label
	return nil
}

// signerLocked opens the CA's own session and finds its key, checking it
// is the one whose public half is pub; c.mu is held.
func (c *CA) signerLocked(pub crypto.PublicKey) (crypto.Signer, error) {
	if c.signer != nil {
		return c.signer, nil
	}
	s, err := c.open()
	if err != nil {
		return nil, fmt.Errorf("ca: hsm session: %w", err)
	}
	sg, err := s.Signer(c.label)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("ca: key %s: %w", c.label, err)
	}
	if k, ok := sg.Public().(interface{ Equal(crypto.PublicKey) bool }); pub != nil && (!ok || !k.Equal(pub)) {
		s.Close()
		return nil, fmt.Errorf("ca: key %s in the HSM is not the CA's", c.label)
	}
	c.sess, c.signer = s, sg
	return sg, nil
}

// Close closes the CA's HSM session.
func (c *CA) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != nil {
		c.sess.Close()
		c.sess, c.signer = nil, nil
	}
}

// Certificate is the CA's certificate, after Load.
func (c *CA) Certificate() *x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cert
}

// CertPEM is the CA's certificate in PEM, for brokers and kiosks.
func (c *CA) CertPEM() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pem
}

// Pool holds the CA's certificate, to verify what it issued.
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	if cert := c.Certificate(); cert != nil {
		p.AddCert(cert)
	}
	return p
}

// sign issues tmpl for pub and records it.
func (c *CA) sign(ctx context.Context, tmpl *x509.Certificate, pub crypto.PublicKey, kind string) ([]byte, error) {
	der, err := c.signCert(tmpl, pub)
	if err != nil {
		return nil, err
	}
	if err := c.record(ctx, c.db, tmpl, kind); err != nil {
		return nil, err
	}
	return der, nil
}

// signCert signs tmpl for pub with the CA's key.
func (c *CA) signCert(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert == nil {
		return nil, ErrNoCA
	}
	sg, err := c.signerLocked(c.cert.PublicKey)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, sg)
	if err != nil {
		return nil, fmt.Errorf("ca: issue %s: %w", tmpl.Subject.CommonName, err)
	}
	return der, nil
}

// execer is the database or a transaction on it.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// record adds tmpl to device_certs.
func (c *CA) record(ctx context.Context, db execer, tmpl *x509.Certificate, kind string) error {
	if _, err := db.ExecContext(ctx, c.db.Rebind(`INSERT INTO device_certs (serial, subject, kind, not_before, not_after) VALUES (?, ?, ?, ?, ?)`),
		SerialHex(tmpl.SerialNumber), tmpl.Subject.CommonName, kind, tmpl.NotBefore.UnixMicro(), tmpl.NotAfter.UnixMicro()); err != nil {
		return fmt.Errorf("ca: record %s: %w", tmpl.Subject.CommonName, err)
	}
	return nil
}

// CheckCSR reads a certificate request and checks what IssueKiosk would:
// an acceptable key and its self-signature. Enrollment checks first, so a
// bad request does not spend the one-time code. The key comes first: a
// stranger's CSR may carry any key, and checking a signature by a huge RSA
// key costs seconds of CPU, while a P-256 one costs a fraction of a
// millisecond.
func CheckCSR(der []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("CSR: %w", err)
	}
	if err := acceptableKey(csr.PublicKey); err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature: %w", err)
	}
	return csr, nil
}

// IssueKiosk signs a kiosk's CSR: a client certificate for kioskID in
// storeID, valid for KioskTTL. The CSR's subject is ignored: the
// certificate says what the hub knows.
func (c *CA) IssueKiosk(ctx context.Context, csrDER []byte, kioskID, storeID string) ([]byte, error) {
	if !protocol.ValidKioskID(kioskID) {
		return nil, fmt.Errorf("ca: issue: %q is not a kiosk id", kioskID)
	}
	csr, err := CheckCSR(csrDER)
	if err != nil {
		return nil, fmt.Errorf("ca: issue %s: %w", kioskID, err)
	}
	return c.issueKiosk(ctx, c.kioskTemplate(kioskID, storeID, c.cfg.Now()), csr.PublicKey, nil)
}

// issueKiosk records tmpl and signs it, refusing a retired kiosk. The
// check and the row are one transaction under the CA row's lock (on
// PostgreSQL; SQLite has one writer), which Revoke takes too: a
// certificate recorded before a retirement's revocation is revoked with
// the kiosk's others, and one asked after it is refused. Otherwise a
// stolen kiosk that held a renewal open while ops retired it (or renewed
// at another hub meanwhile) kept a certificate nobody had revoked. The row
// goes in before the signature, and out again if that fails. check, if
// set, runs in the transaction first.
func (c *CA) issueKiosk(ctx context.Context, tmpl *x509.Certificate, pub crypto.PublicKey, check func(*sql.Tx) error) ([]byte, error) {
	if c.Certificate() == nil {
		return nil, ErrNoCA
	}
	kioskID := tmpl.Subject.CommonName
	err := c.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := c.lockCA(ctx, tx); err != nil {
			return fmt.Errorf("ca: issue %s: %w", kioskID, err)
		}
		// The fleet's table: retiring a kiosk marks it there first.
		var retired sql.NullInt64
		switch err := tx.QueryRowContext(ctx, c.db.Rebind(`SELECT retired_at FROM kiosks WHERE kiosk_id = ?`), kioskID).Scan(&retired); {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return fmt.Errorf("ca: issue %s: %w", kioskID, err)
		case retired.Valid:
			return fmt.Errorf("ca: issue %s: %w", kioskID, ErrRevoked)
		}
		if check != nil {
			if err := check(tx); err != nil {
				return err
			}
		}
		return c.record(ctx, tx, tmpl, KindKiosk)
	})
	if err != nil {
		return nil, err
	}
	der, err := c.signCert(tmpl, pub)
	if err != nil {
		if _, derr := c.db.ExecContext(ctx, c.db.Rebind(`DELETE FROM device_certs WHERE serial = ?`), SerialHex(tmpl.SerialNumber)); derr != nil {
			err = errors.Join(err, fmt.Errorf("ca: issue %s: unrecord: %w", kioskID, derr))
		}
		return nil, err
	}
	return der, nil
}

// lockCA takes the CA row's lock, which orders issues against revocations
// and renewals against each other across hubs.
func (c *CA) lockCA(ctx context.Context, tx *sql.Tx) error {
	var id int
	return tx.QueryRowContext(ctx, `SELECT id FROM device_ca WHERE id = 1`+c.db.ForUpdate()).Scan(&id)
}

// kioskTemplate is a kiosk's certificate issued at now.
func (c *CA) kioskTemplate(kioskID, storeID string, now time.Time) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: kioskID, OrganizationalUnit: []string{storeID}, Organization: []string{c.cfg.Vendor}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(c.cfg.KioskTTL),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

// RenewKiosk issues the kiosk that cur names (a certificate of this CA,
// which the caller has verified and found unrevoked) a new certificate for
// csrDER. It refuses, with a *NotYet, a certificate less than half through
// its life, and a kiosk issued a certificate within RenewEvery: otherwise
// one kiosk's certificate (a stolen kiosk's) mints certificates in a loop,
// each an HSM signature and a row, and a CRL entry once it is retired.
// The kiosk asks at two thirds by its own clock, so half leaves room for
// a kiosk clock fast by up to a sixth of the life (5 of 30 days).
func (c *CA) RenewKiosk(ctx context.Context, cur *x509.Certificate, csrDER []byte, storeID string) ([]byte, error) {
	kioskID := cur.Subject.CommonName
	if !protocol.ValidKioskID(kioskID) {
		return nil, fmt.Errorf("ca: renew: %q is not a kiosk id", kioskID)
	}
	csr, err := CheckCSR(csrDER)
	if err != nil {
		return nil, fmt.Errorf("ca: renew %s: %w", kioskID, err)
	}
	now := c.cfg.Now()
	if due := cur.NotBefore.Add(cur.NotAfter.Sub(cur.NotBefore) / 2); now.Before(due) {
		return nil, &NotYet{Err: ErrNotDue, At: due}
	}
	// Under the CA row's lock, so that requests racing on several hubs get
	// one certificate, and one revoked meanwhile (its kiosk retired while
	// the request was read) gets none.
	return c.issueKiosk(ctx, c.kioskTemplate(kioskID, storeID, now), csr.PublicKey, func(tx *sql.Tx) error {
		var revoked sql.NullInt64
		if err := tx.QueryRowContext(ctx, c.db.Rebind(`SELECT revoked_at FROM device_certs WHERE serial = ?`), SerialHex(cur.SerialNumber)).Scan(&revoked); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("ca: renew %s: %w", kioskID, err)
		} else if revoked.Valid {
			return fmt.Errorf("ca: renew %s: %w", kioskID, ErrRevoked)
		}
		var last sql.NullInt64
		if err := tx.QueryRowContext(ctx, c.db.Rebind(`SELECT MAX(not_before) FROM device_certs WHERE subject = ? AND kind = ?`),
			kioskID, KindKiosk).Scan(&last); err != nil {
			return fmt.Errorf("ca: renew %s: %w", kioskID, err)
		}
		if last.Valid {
			if next := time.UnixMicro(last.Int64).Add(backdate + RenewEvery); now.Before(next) {
				return &NotYet{Err: ErrRenewedRecently, At: next}
			}
		}
		return nil
	})
}

// IssueHub signs a hub's certificate for pub: a broker client certificate
// named name (which starts with protocol.HubPrefix), or with hosts a TLS
// server certificate for those names and addresses.
func (c *CA) IssueHub(ctx context.Context, pub crypto.PublicKey, name string, hosts []string) ([]byte, error) {
	if !strings.HasPrefix(name, protocol.HubPrefix) {
		return nil, fmt.Errorf("ca: issue %q: a hub's name starts with %s", name, protocol.HubPrefix)
	}
	now := c.cfg.Now()
	// Valid from the CA's own start, or a year back, not from now: kiosks
	// check the hub's certificate by their clocks, and a Pi has no
	// real-time clock. One that came back from a power cut on the last
	// time it saved, hours or days behind, with NTP not yet synced or
	// blocked by the store's firewall, refused every certificate a hub
	// issued since, so it could not reconnect after any hub restart,
	// upgrade or failover. A year and HubTTL stay within the 398 days
	// browsers (Apple's) take for a server certificate's whole life.
	notBefore := now.Add(-backdate)
	if ca := c.Certificate(); ca != nil && ca.NotBefore.Before(notBefore) {
		notBefore = ca.NotBefore
		if floor := now.Add(-hubBackdate); notBefore.Before(floor) {
			notBefore = floor
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name, Organization: []string{c.cfg.Vendor}},
		NotBefore:    notBefore,
		NotAfter:     now.Add(c.cfg.HubTTL),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	kind := KindHub
	if len(hosts) > 0 {
		kind = KindServer
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	return c.sign(ctx, tmpl, pub, kind)
}

// acceptableKey admits the keys kiosks make: P-256 ECDSA.
func acceptableKey(pub crypto.PublicKey) error {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve.Params().Name != "P-256" {
		return errors.New("want a P-256 ECDSA key")
	}
	return nil
}

// Revoke revokes every certificate of subject that has not expired, and
// returns how many. It waits for a certificate being issued (issueKiosk).
func (c *CA) Revoke(ctx context.Context, subject, reason string) (int, error) {
	now := c.cfg.Now()
	var n int64
	err := c.db.InTx(ctx, func(tx *sql.Tx) error {
		if err := c.lockCA(ctx, tx); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		res, err := tx.ExecContext(ctx, c.db.Rebind(`UPDATE device_certs SET revoked_at = ?, reason = ? WHERE subject = ? AND revoked_at IS NULL AND not_after > ?`),
			now.UnixMicro(), reason, subject, now.UnixMicro())
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("ca: revoke %s: %w", subject, err)
	}
	if n > 0 {
		// A lost notification only delays the other hubs' brokers until
		// their next recheck.
		c.db.Notify(ctx, store.CredentialsChannel, subject)
	}
	return int(n), nil
}

// RevokeSerial revokes one certificate, cert.
func (c *CA) RevokeSerial(ctx context.Context, cert *x509.Certificate, reason string) error {
	if _, err := c.db.ExecContext(ctx, c.db.Rebind(`UPDATE device_certs SET revoked_at = ?, reason = ? WHERE serial = ? AND revoked_at IS NULL`),
		c.cfg.Now().UnixMicro(), reason, SerialHex(cert.SerialNumber)); err != nil {
		return fmt.Errorf("ca: revoke %s: %w", SerialHex(cert.SerialNumber), err)
	}
	c.db.Notify(ctx, store.CredentialsChannel, cert.Subject.CommonName)
	return nil
}

// Revoked returns the serials revoked and not yet expired.
func (c *CA) Revoked(ctx context.Context) (map[string]bool, error) {
	rows, err := c.db.QueryContext(ctx, c.db.Rebind(`SELECT serial FROM device_certs WHERE revoked_at IS NOT NULL AND not_after > ?`), c.cfg.Now().UnixMicro())
	if err != nil {
		return nil, fmt.Errorf("ca: revoked: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("ca: revoked: %w", err)
		}
		out[s] = true
	}
	return out, rows.Err()
}

// Issued is a certificate the CA issued, as the console shows it.
type Issued struct {
	Serial    string     `json:"serial"`
	Subject   string     `json:"subject"`
	Kind      string     `json:"kind"`
	NotBefore time.Time  `json:"not_before"`
	NotAfter  time.Time  `json:"not_after"`
	Revoked   *time.Time `json:"revoked,omitempty"`
	Reason    string     `json:"reason,omitempty"`
}

// Latest is the newest certificate issued to subject, if any.
func (c *CA) Latest(ctx context.Context, subject string) (*Issued, error) {
	var is Issued
	var nb, na int64
	var rev sql.NullInt64
	var reason sql.NullString
	err := c.db.QueryRowContext(ctx, c.db.Rebind(`SELECT serial, subject, kind, not_before, not_after, revoked_at, reason FROM device_certs
		WHERE subject = ? ORDER BY not_after DESC LIMIT 1`), subject).Scan(&is.Serial, &is.Subject, &is.Kind, &nb, &na, &rev, &reason)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ca: latest %s: %w", subject, err)
	}
	is.NotBefore, is.NotAfter, is.Reason = time.UnixMicro(nb).UTC(), time.UnixMicro(na).UTC(), reason.String
	if rev.Valid {
		t := time.UnixMicro(rev.Int64).UTC()
		is.Revoked = &t
	}
	return &is, nil
}

// CRL returns a signed revocation list of every revoked certificate not
// yet expired, good for at least next/2 more and at most next (brokers
// refuse a stale one, so callers ask well before). Anyone may ask (GET
// /api/v1/ca/crl), so a list is signed only when the revoked certificates
// have changed or the last list is half way to its next update; otherwise
// the last one is served again, from memory or from device_ca, where every
// hub on the database finds the newest.
func (c *CA) CRL(ctx context.Context, next time.Duration) ([]byte, error) {
	if c.Certificate() == nil {
		return nil, ErrNoCA
	}
	_, revoked, err := c.revokedEntries(ctx)
	if err != nil {
		return nil, err
	}
	c.crlMu.Lock()
	defer c.crlMu.Unlock()
	if c.crl.serves(revoked, c.cfg.Now(), next) {
		return c.crl.der, nil
	}
	// Another hub signs rarely at the same moment, and its list then
	// serves: a few rounds suffice.
	for range 5 {
		// Read again under the lock: a request that read the revoked
		// certificates before a change must not sign the old set.
		entries, revoked, err := c.revokedEntries(ctx)
		if err != nil {
			return nil, err
		}
		now := c.cfg.Now()
		if c.crl.serves(revoked, now, next) {
			return c.crl.der, nil
		}
		var number int64
		var stored []byte
		err = c.db.QueryRowContext(ctx, `SELECT crl_number, crl_der FROM device_ca WHERE id = 1`).Scan(&number, &stored)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrNoCA
		}
		if err != nil {
			return nil, fmt.Errorf("ca: crl: %w", err)
		}
		if l, err := c.parseCRL(stored); err == nil && l.serves(revoked, now, next) {
			c.crl = l
			return l.der, nil
		}
		l := &signedCRL{this: now.Add(-time.Minute), next: now.Add(next), serials: revoked}
		if l.der, err = c.signCRL(number+1, entries, l.this, l.next); err != nil {
			return nil, err
		}
		// Stored only over the list read, so that no two lists share a
		// number; else another hub stored one meanwhile, read next round.
		res, err := c.db.ExecContext(ctx, c.db.Rebind(`UPDATE device_ca SET crl_number = ?, crl_der = ? WHERE id = 1 AND crl_number = ?`),
			number+1, l.der, number)
		if err != nil {
			return nil, fmt.Errorf("ca: crl: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			c.crl = l
			return l.der, nil
		}
	}
	return nil, errors.New("ca: crl: other hubs kept storing lists; try again")
}

// signedCRL is a revocation list the CA signed, kept to serve again.
type signedCRL struct {
	der        []byte
	this, next time.Time
	serials    map[string]bool // SerialHex
}

// serves reports whether l lists exactly the revoked serials and, at now,
// is in force and good for at least half of life more.
func (l *signedCRL) serves(revoked map[string]bool, now time.Time, life time.Duration) bool {
	return l != nil && !now.Before(l.this) && now.Before(l.next.Add(-life/2)) && maps.Equal(l.serials, revoked)
}

// parseCRL reads a list from device_ca, checking it is the CA's.
func (c *CA) parseCRL(der []byte) (*signedCRL, error) {
	if der == nil {
		return nil, errors.New("ca: no stored CRL")
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("ca: stored crl: %w", err)
	}
	if err := crl.CheckSignatureFrom(c.Certificate()); err != nil {
		return nil, fmt.Errorf("ca: stored crl: %w", err)
	}
	l := &signedCRL{der: der, this: crl.ThisUpdate, next: crl.NextUpdate, serials: map[string]bool{}}
	for _, e := range crl.RevokedCertificateEntries {
		l.serials[SerialHex(e.SerialNumber)] = true
	}
	return l, nil
}

// revokedEntries reads the certificates revoked and not yet expired, as
// CRL entries and as a set of SerialHex.
func (c *CA) revokedEntries(ctx context.Context) ([]x509.RevocationListEntry, map[string]bool, error) {
	rows, err := c.db.QueryContext(ctx, c.db.Rebind(`SELECT serial, revoked_at FROM device_certs WHERE revoked_at IS NOT NULL AND not_after > ? ORDER BY serial`),
		c.cfg.Now().UnixMicro())
	if err != nil {
		return nil, nil, fmt.Errorf("ca: crl: %w", err)
	}
	defer rows.Close()
	var entries []x509.RevocationListEntry
	set := map[string]bool{}
	for rows.Next() {
		var s string
		var at int64
		if err := rows.Scan(&s, &at); err != nil {
			return nil, nil, fmt.Errorf("ca: crl: %w", err)
		}
		n, ok := new(big.Int).SetString(s, 16)
		if !ok {
			continue
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: time.UnixMicro(at).UTC()})
		set[SerialHex(n)] = true
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("ca: crl: %w", err)
	}
	return entries, set, nil
}

// signCRL signs a list numbered number with the CA's key.
func (c *CA) signCRL(number int64, entries []x509.RevocationListEntry, this, next time.Time) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert == nil {
		return nil, ErrNoCA
	}
	sg, err := c.signerLocked(c.cert.PublicKey)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(number), ThisUpdate: this, NextUpdate: next, RevokedCertificateEntries: entries,
	}, c.cert, sg)
	if err != nil {
		return nil, fmt.Errorf("ca: crl: %w", err)
	}
	return der, nil
}

// serial is a random 128-bit certificate serial.
func serial() *big.Int {
	b := make([]byte, 16)
	rand.Read(b)
	b[0] &= 0x7f // positive
	return new(big.Int).SetBytes(b)
}

// SerialHex is a serial as device_certs keeps it.
func SerialHex(n *big.Int) string { return fmt.Sprintf("%x", n) }

// ParseCertPEM reads the first certificate of a PEM block list.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no certificate in PEM")
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}
