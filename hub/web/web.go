// Package web serves the hub's HTTP face with chi: health, the published
// signing keys that anyone needs to verify a stamp, worker status, the
// patent's XML purchase API, Prometheus metrics, and mounts the customer
// portal, the ops console and the operator API.
package web

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/frank-postage/frank/hub/accounts"
	"github.com/frank-postage/frank/hub/ca"
	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/keys"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/hub/releases"
	"github.com/frank-postage/frank/hub/web/assets"
	"github.com/frank-postage/frank/hub/web/session"
	"github.com/frank-postage/frank/protocol"
)

// keyList lists every signing key that ever signed.
type keyList interface {
	All(ctx context.Context) ([]keys.Key, error)
}

// pinger reports whether the store answers.
type pinger interface {
	PingContext(ctx context.Context) error
}

// workers reports PSDM status.
type workers interface {
	Status() []psdm.Status
}

// customers checks a web customer's login.
type customers interface {
	Authenticate(ctx context.Context, login, password string) (*accounts.Account, error)
}

// stamper sells through the patent's XML API.
type stamper interface {
	WebStamp(ctx context.Context, acct *accounts.Account, req *protocol.WebStampRequest, requestID string) (*protocol.XMLIndicium, error)
}

// enroller trades one-time codes for kiosk credentials.
type enroller interface {
	Enroll(ctx context.Context, code string, issue func(*protocol.EnrollResult) error) (*protocol.EnrollResult, error)
	Get(ctx context.Context, kioskID string) (fleet.Kiosk, error)
}

// deviceCA issues kiosks their certificates and publishes itself.
type deviceCA interface {
	CertPEM() []byte
	IssueKiosk(ctx context.Context, csrDER []byte, kioskID, storeID string) ([]byte, error)
	// RenewKiosk issues a kiosk presenting cur a new certificate, or
	// refuses with a *ca.NotYet.
	RenewKiosk(ctx context.Context, cur *x509.Certificate, csrDER []byte, storeID string) ([]byte, error)
	Revoked(ctx context.Context) (map[string]bool, error)
	RevokeSerial(ctx context.Context, cert *x509.Certificate, reason string) error
	CRL(ctx context.Context, next time.Duration) ([]byte, error)
}

// Server holds what the handlers need.
type Server struct {
	Keys      keyList
	DB        pinger
	Ledger    stopper  // healthz fails once a ledger check stopped sales
	Voids     voidBook // the void list and indicium status, for verifiers; may be nil
	Workers   workers
	Customers customers
	Stamps    stamper
	// Enroll serves kiosk enrollment when set; KioskBroker is the broker
	// address kiosks are told (empty: they use the hub's host).
	Enroll        enroller
	KioskBroker   string
	BrokerAddr    string          // the embedded broker's plain listener, if it runs
	BrokerTLSAddr string          // its mqtts listener, if it runs
	EnrollLogins  *session.Logins // wrong codes, per address
	// CA issues kiosk certificates at enrollment and renewal, and is
	// published at /api/v1/ca. Without it kiosks enroll for passwords.
	CA deviceCA
	// Passwords lets a kiosk that sends no CSR enroll for a password.
	Passwords bool
	// HSTS tells browsers to come back over HTTPS only: the hub serves TLS.
	HSTS bool
	// Portal, Console, OpsAPI and Metrics are mounted when set.
	Portal  http.Handler
	Console http.Handler
	OpsAPI  http.Handler
	Metrics http.Handler
	// OpsOnly guards what only ops may read (/api/v1/psdm: the MPSDs and
	// their registers); without it that is not served.
	OpsOnly func(http.Handler) http.Handler
	// Releases serves signed kiosk releases' binaries, when set, within
	// each kiosk's download budget (downloads.go), on the clock Now (nil:
	// time.Now).
	Releases  releaseFiles
	Now       func() time.Time
	downloads *downloads
	voidsMu   sync.Mutex
	voids     *voidList // the whole void list, as last built
	Log       *slog.Logger
	// CustomerLogins limits failed customer logins to the XML API: the
	// portal's limits, kept in the database for every hub, so the API is
	// no way around them. Nil keeps this server's own.
	CustomerLogins *session.Logins
}

// releaseFiles are the published kiosk releases; hub/releases.
type releaseFiles interface {
	Binary(ctx context.Context, version, arch string) ([]byte, time.Time, error)
}

// Handler returns the router.
func (s *Server) Handler() http.Handler {
	if s.CustomerLogins == nil {
		s.CustomerLogins = session.NewLogins("portal", nil)
	}
	r := chi.NewRouter()
	r.Use(middleware.Recoverer, limitBody, securityHeaders, s.dated)
	if s.HSTS {
		r.Use(hsts)
	}
	r.Get("/healthz", s.healthz)
	r.Route("/api/v1", func(r chi.Router) {
		r.Get("/certificates", s.certificates)
		if s.Voids != nil {
			r.Get("/voided", s.voided)
			r.Get("/indicia/{meter}/{label}", s.indiciumStatus)
		}
		if s.CA != nil {
			r.Get(strings.TrimPrefix(protocol.CAPath, "/api/v1"), s.caCert)
			r.Get("/ca/crl", s.crl)
			r.Post("/renew", s.renew)
		}
		if s.OpsOnly != nil {
			r.Method(http.MethodGet, "/psdm", s.OpsOnly(http.HandlerFunc(s.psdm)))
		}
		r.HandleFunc("/webstamp", s.webstamp) // every method: others get its XML error
		if s.Enroll != nil {
			r.Post("/enroll", s.enroll)
		}
		if s.OpsAPI != nil {
			r.Mount("/ops", s.OpsAPI)
		}
		if s.Releases != nil {
			s.downloads = newDownloads()
			r.Get("/releases/{version}/{arch}", s.release)
		}
	})
	if s.Metrics != nil {
		r.Method(http.MethodGet, "/metrics", s.Metrics)
	}
	r.Handle("/static/*", assets.Handler())
	// Pages with logins refuse cross-origin form posts by the browser's
	// own Origin and Sec-Fetch-Site headers, besides each form's token.
	xo := http.NewCrossOriginProtection()
	if s.Portal != nil {
		r.Mount("/portal", xo.Handler(forms(s.Portal)))
		r.Get("/", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/portal/", http.StatusSeeOther) })
	}
	if s.Console != nil {
		r.Mount("/console", xo.Handler(forms(s.Console)))
	}
	return r
}

// PlainHandler serves, beside HTTPS, what load balancers and Prometheus
// read over plain HTTP: /healthz and /metrics.
func (s *Server) PlainHandler() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer, limitBody)
	r.Get("/healthz", s.healthz)
	if s.Metrics != nil {
		r.Method(http.MethodGet, "/metrics", s.Metrics)
	}
	return r
}

// hsts has browsers use HTTPS only, for a year.
func hsts(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", "max-age=31536000")
		next.ServeHTTP(w, r)
	})
}

// securityHeaders keeps pages out of frames and scripts to our own files.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'")
		next.ServeHTTP(w, r)
	})
}

// dated sets each answer's Date by the hub's clock, the one its CA and
// broker judge certificates by: kiosks, whose clocks may run days behind,
// renew by it (identity.HubNow).
func (s *Server) dated(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", s.now().UTC().Format(http.TimeFormat))
		next.ServeHTTP(w, r)
	})
}

// stopper says whether sales are stopped; ledger.Ledger.
// voidBook says which indicia must not be accepted as postage; the ledger.
type voidBook interface {
	VoidList(ctx context.Context) ([]ledger.Void, error)
	VoidCount(ctx context.Context) (int64, error)
	VoidPage(ctx context.Context, after string, limit int) ([]ledger.Void, string, error)
	IndiciumStatus(ctx context.Context, meter string, label protocol.LabelSerial, ar int64) (status, reason string, err error)
}

type stopper interface {
	Stopped() error
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.DB.PingContext(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "store unavailable"})
		return
	}
	if s.Ledger != nil && s.Ledger.Stopped() != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "sales stopped by the ledger check"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// certificate is the published form of a key.
type certificate struct {
	Serial       uint32 `json:"serial"`
	Algorithm    int    `json:"algorithm"`
	PublicKeyPEM string `json:"public_key_pem"`
	// CertificatePEM is the postal authority's certificate for the key:
	// verify it with the authority's public key and the hub need not be
	// trusted.
	CertificatePEM string `json:"certificate_pem"`
	Active         bool   `json:"active"`
	// Compromised is when the key was compromised: verifiers refuse
	// stamps it signed dated protocol.CompromiseDate of it or later.
	Compromised *time.Time `json:"compromised,omitempty"`
	// Retired is when another key took over: hubs follow within seconds,
	// so verifiers refuse its stamps dated more than a day after.
	Retired *time.Time `json:"retired,omitempty"`
}

// VoidPageMax is the most entries a page of the void list holds, whatever
// its limit asks (up to ledger.VoidPageMax): anyone may ask for pages, and
// each costs a query and its encoding, about 3 ms of CPU per 1,000.
const VoidPageMax = 1_000

// voided publishes the void list: every indicium voided or spoiled, which
// verifiers refuse as postage. Asked with no query it is the whole list in
// one array, as it always was: a client that knows no paging must never
// take part of the list for all of it, and accept a voided stamp. With
// limit (1 to ledger.VoidPageMax) and after (a cursor) it is one page of at
// most VoidPageMax entries, and a Link header with rel="next" names the
// next page, until the last.
func (s *Server) voided(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !q.Has("limit") && !q.Has("after") {
		whole, err := s.wholeVoidList(r.Context())
		if err != nil {
			s.Log.Error("void list", "err", err)
			writeError(w, protocol.Errorf(protocol.CodeInternal, "internal error"))
			return
		}
		w.Header().Set("ETag", whole.etag)
		w.Header().Set("Cache-Control", "no-cache")
		if match := r.Header.Get("If-None-Match"); match != "" && strings.Contains(match, whole.etag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(whole.body)
		return
	}
	limit := VoidPageMax
	if q.Has("limit") {
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 1 || n > ledger.VoidPageMax {
			writeError(w, protocol.Errorf(protocol.CodeInvalidRequest, "limit: want 1 to %d", ledger.VoidPageMax))
			return
		}
		// A page may hold fewer than asked: verifiers that ask for the
		// most the ledger pages by get VoidPageMax, and links carry it.
		limit = min(n, VoidPageMax)
	}
	page, next, err := s.Voids.VoidPage(r.Context(), q.Get("after"), limit)
	if err != nil {
		if pe := (*protocol.Error)(nil); errors.As(err, &pe) {
			writeError(w, err)
			return
		}
		s.Log.Error("void list page", "err", err)
		writeError(w, protocol.Errorf(protocol.CodeInternal, "internal error"))
		return
	}
	if next != "" {
		more := url.URL{Path: r.URL.Path, RawQuery: url.Values{"limit": {strconv.Itoa(limit)}, "after": {next}}.Encode()}
		w.Header().Set("Link", "<"+more.String()+`>; rel="next"`)
	}
	writeJSON(w, http.StatusOK, page)
}

// voidList is the whole void list as last encoded: n entries, and the
// ETag that names them.
type voidList struct {
	n    int64
	body []byte
	etag string
}

// wholeVoidList returns the whole void list, encoded again only when it
// has grown: anyone may ask for it, and a long list is costly to build,
// while its count is an index's length. One request at a time builds it.
func (s *Server) wholeVoidList(ctx context.Context) (*voidList, error) {
	n, err := s.Voids.VoidCount(ctx)
	if err != nil {
		return nil, err
	}
	s.voidsMu.Lock()
	defer s.voidsMu.Unlock()
	if s.voids != nil && s.voids.n == n {
		return s.voids, nil
	}
	list, err := s.Voids.VoidList(ctx)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(list)
	if err != nil {
		return nil, err
	}
	body = append(body, '\n')
	sum := sha256.Sum256(body)
	// Counted by the list itself: a void between the count and the list
	// is in this body, and the next count matches it.
	s.voids = &voidList{n: int64(len(list)), body: body, etag: fmt.Sprintf(`"%d-%x"`, len(list), sum[:8])}
	return s.voids, nil
}

// indiciumStatus answers whether the stamp a meter made for a label is
// valid, voided or unknown.
func (s *Server) indiciumStatus(w http.ResponseWriter, r *http.Request) {
	meter := chi.URLParam(r, "meter")
	label, err := protocol.ParseLabelSerial(chi.URLParam(r, "label"))
	var ar int64
	if q := r.URL.Query().Get("ar"); q != "" && err == nil {
		ar, err = strconv.ParseInt(q, 10, 64)
		if ar <= 0 {
			err = errors.New("ar: want a positive register")
		}
	}
	if err != nil || len(meter) > 16 {
		writeError(w, protocol.Errorf(protocol.CodeInvalidRequest, "want /api/v1/indicia/METER/LABEL[?ar=AR]"))
		return
	}
	st, why, err := s.Voids.IndiciumStatus(r.Context(), meter, label, ar)
	if err != nil {
		s.Log.Error("indicium status", "err", err)
		writeError(w, protocol.Errorf(protocol.CodeInternal, "internal error"))
		return
	}
	out := map[string]any{"meter": meter, "label": label.String(), "status": st, "reason": why}
	if ar != 0 {
		out["ar"] = ar
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) certificates(w http.ResponseWriter, r *http.Request) {
	all, err := s.Keys.All(r.Context())
	if err != nil {
		s.Log.Error("list keys", "err", err)
		writeError(w, err)
		return
	}
	out := make([]certificate, 0, len(all))
	for _, k := range all {
		out = append(out, certificate{Serial: k.CertSerial, Algorithm: k.Algorithm, PublicKeyPEM: k.PublicKeyPEM, CertificatePEM: k.CertificatePEM, Active: k.Retired == nil, Compromised: k.Compromised, Retired: k.Retired})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) psdm(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Workers.Status())
}

// webstamp serves the patent's XML purchase. The customer authenticates
// with HTTP Basic, and names the purchase with an Idempotency-Key header:
// a retry gets the first answer, never a second stamp. Only an XML body is
// taken: a form another site's page posts (text/plain, or form-encoded)
// with the browser's Basic credentials is refused before anything else.
func (s *Server) webstamp(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeXMLErrorStatus(w, http.StatusMethodNotAllowed, protocol.Errorf(protocol.CodeInvalidRequest, "%s: POST a WebStampRequest", r.Method))
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/xml" && mt != "text/xml" {
		writeXMLErrorStatus(w, http.StatusUnsupportedMediaType, protocol.Errorf(protocol.CodeMalformed, "Content-Type: want application/xml"))
		return
	}
	login, password, ok := r.BasicAuth()
	if !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="frank"`)
		writeXMLError(w, protocol.Errorf(protocol.CodeUnauthorized, "log in with HTTP Basic authentication"))
		return
	}
	logins := s.CustomerLogins
	if ok, wait := logins.Allow(r, login); !ok {
		w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
		// A limit, not a wrong password: 429, as enrollment answers.
		writeXMLErrorStatus(w, http.StatusTooManyRequests, protocol.Errorf(protocol.CodeUnauthorized, "too many failed logins; try again later"))
		return
	}
	// Done with the login as soon as it is checked, not at the end of the
	// purchase: a try under way counts against the limits, and purchases
	// at once of one customer would otherwise be refused as failed logins.
	acct, err := func() (*accounts.Account, error) {
		defer logins.Done(r, login)
		// A name longer than any login is wrong without a look (the
		// limits count it against the address alone).
		if session.TooLong(login) {
			logins.Fail(r, login)
			return nil, accounts.ErrAuth
		}
		acct, err := s.Customers.Authenticate(r.Context(), login, password)
		if err != nil {
			logins.Fail(r, login)
		} else {
			logins.Succeeded(r, login)
		}
		return acct, err
	}()
	if err != nil {
		writeXMLError(w, protocol.Errorf(protocol.CodeUnauthorized, "wrong login or password"))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, protocol.MaxMessageBytes+1))
	if err != nil {
		writeXMLError(w, protocol.Errorf(protocol.CodeMalformed, "reading the request: %v", err))
		return
	}
	req, err := protocol.DecodeWebStampRequest(body)
	if err != nil {
		writeXMLError(w, err)
		return
	}
	id := r.Header.Get("Idempotency-Key")
	if !protocol.ValidRequestID(id) { // missing too: a retry without one would buy again
		writeXMLError(w, protocol.Errorf(protocol.CodeInvalidRequest, "Idempotency-Key: want 1-64 of [A-Za-z0-9_-], the same for a retry"))
		return
	}
	s.Log.Info("webstamp", "req", *req, "idempotency_key", id)
	in, err := s.Stamps.WebStamp(r.Context(), acct, req, id)
	if err != nil {
		writeXMLError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(http.StatusOK)
	w.Write([]byte(xml.Header))
	xml.NewEncoder(w).Encode(in)
}

// enroll trades a one-time code for a kiosk's certificate (signed from the
// CSR it sent; its key never leaves it) or, where allowed, a password.
func (s *Server) enroll(w http.ResponseWriter, r *http.Request) {
	if ok, wait := s.EnrollLogins.Allow(r, ""); !ok {
		w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
		// A limit, not a wrong code: 429, in the one error shape.
		writeJSON(w, http.StatusTooManyRequests, protocol.ErrorBody{Error: protocol.Errorf(protocol.CodeUnauthorized, "too many wrong codes from this address; try again later")})
		return
	}
	defer s.EnrollLogins.Done(r, "")
	body, err := io.ReadAll(io.LimitReader(r.Body, protocol.MaxMessageBytes+1))
	if err != nil {
		writeError(w, protocol.Errorf(protocol.CodeMalformed, "reading the request: %v", err))
		return
	}
	req, err := protocol.DecodeEnrollRequest(body)
	if err != nil {
		writeError(w, err)
		return
	}
	var csr []byte
	switch {
	case req.CSR != "" && s.CA != nil:
		if csr, err = csrDER(req.CSR); err != nil {
			// A failed try like a wrong code: a stranger's CSRs cost the
			// hub its checks, and only a kiosk's bug sends a bad one.
			s.EnrollLogins.Fail(r, "")
			writeError(w, err)
			return
		}
	case req.CSR == "" && !s.Passwords:
		writeError(w, protocol.Errorf(protocol.CodeInvalidRequest,
			"csr: this hub enrolls kiosks with certificates; update the kiosk's software"))
		return
	}
	// The certificate is issued before the code is spent: a hub that stops
	// in between, or an HSM that fails, leaves the code good for the
	// kiosk's next try.
	var der []byte
	issue := func(res *protocol.EnrollResult) error {
		if csr == nil {
			return nil
		}
		var err error
		der, err = s.CA.IssueKiosk(r.Context(), csr, res.KioskID, res.Store)
		return err
	}
	res, err := s.Enroll.Enroll(r.Context(), req.Code, issue)
	if der != nil && err != nil {
		// Another use of the code won, or the code was spent meanwhile:
		// the certificate issued for this one is revoked.
		if cert, perr := x509.ParseCertificate(der); perr == nil {
			if rerr := s.CA.RevokeSerial(r.Context(), cert, "enrollment code used by another request"); rerr != nil {
				s.Log.Error("enrollment: a certificate issued for a code used meanwhile is not revoked", "err", rerr)
			}
		}
	}
	switch {
	case errors.Is(err, ca.ErrRevoked):
		s.Log.Warn("enrollment of a kiosk retired meanwhile refused", "ip", s.EnrollLogins.ClientIP(r))
		writeError(w, protocol.Errorf(protocol.CodeForbidden, "this kiosk was retired"))
		return
	case errors.Is(err, fleet.ErrEnrollCode):
		s.EnrollLogins.Fail(r, "")
		s.Log.Warn("enrollment refused", "ip", s.EnrollLogins.ClientIP(r))
		writeError(w, protocol.Errorf(protocol.CodeUnauthorized, "the code is wrong, used or expired; ask ops for a new one (hub kiosk add)"))
		return
	case err != nil:
		// The CSR was checked above: this is the store or the HSM.
		s.Log.Error("enrollment", "err", err)
		writeError(w, protocol.Errorf(protocol.CodeInternal, "internal error"))
		return
	}
	scheme, addr := "tcp", s.BrokerAddr
	if csr != nil {
		res.Certificate = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
		res.CAChain = string(s.CA.CertPEM())
		res.Password = ""
		scheme, addr = "mqtts", s.BrokerTLSAddr
	}
	res.Broker = s.KioskBroker
	if res.Broker == "" && addr != "" {
		// The kiosk reached us by some host name; the embedded broker is
		// on the same host.
		if _, port, err := net.SplitHostPort(addr); err == nil {
			host := r.Host
			if h, _, err := net.SplitHostPort(r.Host); err == nil {
				host = h
			}
			res.Broker = scheme + "://" + net.JoinHostPort(host, port)
		}
	}
	s.Log.Info("kiosk enrolled", "kiosk", res.KioskID, "store", res.Store, "certificate", csr != nil, "ip", s.EnrollLogins.ClientIP(r))
	writeJSON(w, http.StatusOK, res)
}

// csrDER reads a PEM certificate request the CA would sign.
func csrDER(p string) ([]byte, error) {
	blk, _ := pem.Decode([]byte(p))
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, protocol.Errorf(protocol.CodeInvalidRequest, "csr: want a PEM CERTIFICATE REQUEST")
	}
	if _, err := ca.CheckCSR(blk.Bytes); err != nil {
		return nil, protocol.Errorf(protocol.CodeInvalidRequest, "csr: %v", err)
	}
	return blk.Bytes, nil
}

// renew gives a kiosk, identified by the certificate it presents, a new
// certificate for a new CSR: the authenticated channel for renewal. The CA
// refuses a certificate not yet half through its life, and a kiosk issued
// one within the hour: a kiosk renews once a certificate, at two thirds.
func (s *Server) renew(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		writeError(w, protocol.Errorf(protocol.CodeUnauthorized, "present the kiosk's certificate; one that expired needs a new enrollment code"))
		return
	}
	leaf := r.TLS.VerifiedChains[0][0]
	id := leaf.Subject.CommonName
	revoked, err := s.CA.Revoked(r.Context())
	if err != nil {
		s.Log.Error("renewal", "err", err)
		writeError(w, protocol.Errorf(protocol.CodeInternal, "internal error"))
		return
	}
	k, err := s.Enroll.Get(r.Context(), id)
	if revoked[fmt.Sprintf("%x", leaf.SerialNumber)] || err != nil || !protocol.ValidKioskID(id) {
		writeError(w, protocol.Errorf(protocol.CodeForbidden, "this certificate may not renew: revoked, or not a provisioned kiosk's"))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, protocol.MaxMessageBytes+1))
	if err != nil {
		writeError(w, protocol.Errorf(protocol.CodeMalformed, "reading the request: %v", err))
		return
	}
	req, err := protocol.DecodeRenewRequest(body)
	if err != nil {
		writeError(w, err)
		return
	}
	csr, err := csrDER(req.CSR)
	if err != nil {
		writeError(w, err)
		return
	}
	der, err := s.CA.RenewKiosk(r.Context(), leaf, csr, k.Store)
	var notYet *ca.NotYet
	switch {
	case errors.Is(err, ca.ErrRevoked):
		s.Log.Warn("renewal by a certificate revoked meanwhile refused", "kiosk", id)
		writeError(w, protocol.Errorf(protocol.CodeForbidden, "this certificate may not renew: revoked, or not a provisioned kiosk's"))
		return
	case errors.As(err, &notYet):
		s.Log.Warn("renewal refused", "kiosk", id, "err", err)
		at := notYet.At.UTC().Format(time.RFC3339)
		if errors.Is(err, ca.ErrRenewedRecently) {
			w.Header().Set("Retry-After", notYet.At.UTC().Format(http.TimeFormat))
			writeJSON(w, http.StatusTooManyRequests, protocol.ErrorBody{Error: protocol.Errorf(protocol.CodeForbidden,
				"this kiosk was issued a certificate within the hour; try again after %s", at)})
			return
		}
		writeError(w, protocol.Errorf(protocol.CodeForbidden, "this certificate is not due for renewal before %s; kiosks renew at two thirds of its life", at))
		return
	case err != nil:
		// The CSR was checked above: this is the store or the HSM.
		s.Log.Error("renewal", "kiosk", id, "err", err)
		writeError(w, protocol.Errorf(protocol.CodeInternal, "internal error"))
		return
	}
	s.Log.Info("kiosk certificate renewed", "kiosk", id)
	writeJSON(w, http.StatusOK, protocol.RenewResult{Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		CAChain: string(s.CA.CertPEM())})
}

// caCert publishes the device CA's certificate, for brokers and kiosks.
func (s *Server) caCert(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Write(s.CA.CertPEM())
}

// crl serves the revocation list (DER), good for a day and at least half
// of it more. Anyone may ask, so the CA signs a new list only when a
// certificate was revoked or the last is half through; otherwise it serves
// the last again, and a revocation still shows at once.
func (s *Server) crl(w http.ResponseWriter, r *http.Request) {
	der, err := s.CA.CRL(r.Context(), 24*time.Hour)
	if err != nil {
		s.Log.Error("crl", "err", err)
		writeError(w, protocol.Errorf(protocol.CodeInternal, "internal error"))
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Header().Set("Cache-Control", "no-cache") // a revocation must show at once
	w.Write(der)
}

// writeError answers err with protocol's status and error body.
func writeError(w http.ResponseWriter, err error) {
	status, body := protocol.HTTPError(err)
	writeJSON(w, status, body)
}

func writeXMLError(w http.ResponseWriter, err error) {
	writeXMLErrorStatus(w, protocol.AsError(err).Code.HTTPStatus(), err)
}

// writeXMLErrorStatus is writeXMLError with a status of the caller's.
func writeXMLErrorStatus(w http.ResponseWriter, status int, err error) {
	pe := protocol.AsError(err)
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	w.Write([]byte(xml.Header))
	xml.NewEncoder(w).Encode(protocol.XMLError{Code: pe.Code, Message: pe.Message, MissingMills: pe.MissingMills})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// release serves a release's binary to a kiosk, resumably (Range). Over
// TLS only a kiosk presenting its certificate, not revoked (a retired
// kiosk's), gets one; kiosks check the signature and hash themselves, so
// this only saves the bandwidth.
func (s *Server) release(w http.ResponseWriter, r *http.Request) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) == 0 {
		writeError(w, protocol.Errorf(protocol.CodeUnauthorized, "a kiosk certificate is required"))
		return
	}
	// Before the budget: a revoked certificate spends none.
	if r.TLS != nil && s.CA != nil {
		revoked, err := s.CA.Revoked(r.Context())
		if err != nil {
			s.Log.Error("release", "err", err)
			writeError(w, protocol.Errorf(protocol.CodeInternal, "internal error"))
			return
		}
		if revoked[ca.SerialHex(r.TLS.VerifiedChains[0][0].SerialNumber)] {
			writeError(w, protocol.Errorf(protocol.CodeForbidden, "this kiosk certificate was revoked"))
			return
		}
	}
	// One download under way per kiosk, and a budget (downloads.go), for
	// a kiosk its certificate names. Without one (--tls off, a proxy in
	// front ends TLS) the kiosks of a store behind one address could not
	// be told apart and would end each other's downloads: the proxy bounds
	// them there.
	body := &reader{}
	var size int64
	if r.TLS != nil {
		dl, wait, err := s.downloads.begin(r.Context(), "kiosk "+r.TLS.VerifiedChains[0][0].Subject.CommonName, s.now(), http.NewResponseController(w))
		if err != nil {
			return // the kiosk gave up waiting for its download before to end
		}
		if dl == nil {
			secs := max(1, int(wait.Seconds()))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			// A limit: 429, in the one error shape; the kiosk tries again later.
			writeJSON(w, http.StatusTooManyRequests, protocol.ErrorBody{Error: protocol.Errorf(protocol.CodeServiceUnavailable,
				"this kiosk was sent releases too often; try again in %d s", secs)})
			return
		}
		body.stop = dl.stop
		defer func() { s.downloads.finish(dl, body.n, size, s.now()) }()
	}
	b, at, err := s.Releases.Binary(r.Context(), chi.URLParam(r, "version"), chi.URLParam(r, "arch"))
	if err != nil {
		if errors.Is(err, releases.ErrUnknown) {
			writeError(w, protocol.Errorf(protocol.CodeNotFound, "no release %s for %s", chi.URLParam(r, "version"), chi.URLParam(r, "arch")))
			return
		}
		s.Log.Error("release", "err", err)
		writeError(w, err)
		return
	}
	size, body.ReadSeeker = int64(len(b)), bytes.NewReader(b)
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "frank-kiosk", at, body)
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}
