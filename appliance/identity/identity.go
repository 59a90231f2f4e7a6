// Package identity is a kiosk's TLS identity: the key it makes at
// enrollment (it never leaves the device), the certificate the hub's device
// CA issues for it, and the CA's certificate. Enrollment reaches the hub
// over HTTPS pinned to a fingerprint from the enrollment code, with no web
// PKI; renewal runs over the same channel, authenticated by the current
// certificate, before two thirds of its life has passed by the hub's clock.
package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/frank-postage/frank/protocol"
)

// Files are where the identity lives on the kiosk.
type Files struct {
	Key  string // the kiosk's private key, mode 0600
	Cert string // its certificate
	CA   string // the device CA's certificate
}

// In is the usual place of each file: beside the enrollment, in dir.
func In(dir string) Files {
	return Files{Key: filepath.Join(dir, "kiosk.key"), Cert: filepath.Join(dir, "kiosk.crt"), CA: filepath.Join(dir, "ca.crt")}
}

// Identity is a loaded identity.
type Identity struct {
	files Files
	hub   string // https://host:port, for renewal
	pin   string
	now   func() time.Time

	mu    sync.RWMutex
	cert  *tls.Certificate
	roots *x509.CertPool
	// hubAt is the hub's clock as its last answer's Date gave it, read
	// when the kiosk's clock said syncAt: a Pi has no real-time clock and
	// may run days behind, but the hub's broker judges the certificate by
	// its own.
	hubAt, syncAt time.Time
}

// SyncEvery is how often Run reads the hub's clock.
const SyncEvery = 24 * time.Hour

// Load reads an identity from files. hub and pin are where renewal goes.
func Load(files Files, hub, pin string, now func() time.Time) (*Identity, error) {
	if now == nil {
		now = time.Now
	}
	id := &Identity{files: files, hub: hub, pin: pin, now: now}
	if err := rollForward(files); err != nil {
		return nil, err
	}
	if err := id.reload(); err != nil {
		return nil, err
	}
	return id, nil
}

// rollForward finishes a renewal that a power cut stopped between write's
// renames: a certificate in place with the other's key, the missing half
// still in its .new file. Keys are never reused, so only one pair of the
// files in place and the .new ones can match; it is put in place. A pair
// that matches already is left alone (a cut before the renames: the old
// identity, still valid).
func rollForward(files Files) error {
	cert := []string{files.Cert, files.Cert + ".new"}
	key := []string{files.Key, files.Key + ".new"}
	for _, c := range cert {
		for _, k := range key {
			if _, err := tls.LoadX509KeyPair(c, k); err != nil {
				continue
			}
			if c == files.Cert && k == files.Key {
				return nil
			}
			for _, mv := range [][2]string{{c, files.Cert}, {k, files.Key}} {
				if mv[0] == mv[1] {
					continue
				}
				if err := os.Rename(mv[0], mv[1]); err != nil {
					return fmt.Errorf("identity: finish renewal: %w", err)
				}
			}
			if err := SyncDir(filepath.Dir(files.Cert)); err != nil {
				return fmt.Errorf("identity: finish renewal: %w", err)
			}
			if err := SyncDir(filepath.Dir(files.Key)); err != nil {
				return fmt.Errorf("identity: finish renewal: %w", err)
			}
			return nil
		}
	}
	return nil // nothing matches: reload says why
}

func (id *Identity) reload() error {
	fi, err := os.Stat(id.files.Key)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("identity: key %s: mode %v lets others read it; chmod 600 it", id.files.Key, fi.Mode().Perm())
	}
	c, err := tls.LoadX509KeyPair(id.files.Cert, id.files.Key)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return fmt.Errorf("identity: %w", err)
		}
	}
	caPEM, err := os.ReadFile(id.files.CA)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("identity: %s holds no certificate", id.files.CA)
	}
	id.mu.Lock()
	id.cert, id.roots = &c, roots
	id.mu.Unlock()
	return nil
}

// Leaf is the current certificate.
func (id *Identity) Leaf() *x509.Certificate {
	id.mu.RLock()
	defer id.mu.RUnlock()
	return id.cert.Leaf
}

// Expired reports whether the certificate's life is over, by the hub's
// clock: the kiosk needs a new enrollment code.
func (id *Identity) Expired() bool { return id.HubNow().After(id.Leaf().NotAfter) }

// Due reports whether two thirds of the certificate's life have passed, by
// the hub's clock.
func (id *Identity) Due() bool {
	l := id.Leaf()
	return id.HubNow().After(l.NotBefore.Add(l.NotAfter.Sub(l.NotBefore) * 2 / 3))
}

// HubNow is the hub's clock: the last time the hub gave, moved on by the
// kiosk's clock since (monotonic, so a step of the kiosk's clock does not
// move it); the kiosk's own clock until the hub has answered once.
func (id *Identity) HubNow() time.Time {
	id.mu.RLock()
	hubAt, syncAt := id.hubAt, id.syncAt
	id.mu.RUnlock()
	if hubAt.IsZero() {
		return id.now()
	}
	return hubAt.Add(id.now().Sub(syncAt))
}

// noteDate keeps the hub's clock from an answer's Date header.
func (id *Identity) noteDate(h http.Header) {
	at, err := http.ParseTime(h.Get("Date"))
	if err != nil {
		return
	}
	now := id.now()
	id.mu.Lock()
	id.hubAt, id.syncAt = at, now
	id.mu.Unlock()
}

// synced says whether the hub's clock was read within SyncEvery.
func (id *Identity) synced() bool {
	id.mu.RLock()
	defer id.mu.RUnlock()
	return !id.syncAt.IsZero() && id.now().Sub(id.syncAt) < SyncEvery
}

// SyncClock reads the hub's clock from the Date of its answer for the CA
// certificate, the smallest thing it serves. It presents no certificate:
// one that expired fails the handshake, and the kiosk must then learn, by
// the hub's clock, that it expired.
func (id *Identity) SyncClock(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, id.hub+protocol.CAPath, nil)
	if err != nil {
		return fmt.Errorf("identity: read the hub's clock: %w", err)
	}
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: protocol.PinnedTLS(id.pin), DisableKeepAlives: true}, Timeout: time.Minute}).Do(req)
	if err != nil {
		return fmt.Errorf("identity: read the hub's clock: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, protocol.MaxMessageBytes))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("identity: read the hub's clock: the hub answered %s", resp.Status)
	}
	id.noteDate(resp.Header)
	return nil
}

// hubTLS reaches the hub pinned to the enrollment's fingerprint,
// presenting the kiosk's current certificate.
func (id *Identity) hubTLS() *tls.Config {
	tc := protocol.PinnedTLS(id.pin)
	tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		id.mu.RLock()
		defer id.mu.RUnlock()
		return id.cert, nil
	}
	return tc
}

// ClientTLS is the TLS configuration for the broker: its certificate from
// the device CA, and the kiosk's current certificate (a renewed one from
// the next connection on).
func (id *Identity) ClientTLS(serverName string) *tls.Config {
	id.mu.RLock()
	roots := id.roots
	id.mu.RUnlock()
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			id.mu.RLock()
			defer id.mu.RUnlock()
			return id.cert, nil
		}}
}

// Hub is the hub's HTTPS address, https://host:port.
func (id *Identity) Hub() string { return id.hub }

// HTTPClient talks to the hub over HTTPS pinned to the fingerprint the
// kiosk enrolled with, presenting its certificate: for downloads.
func (id *Identity) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: id.hubTLS(), Proxy: http.ProxyFromEnvironment}, Timeout: 10 * time.Minute}
}

// Renew has the hub issue a certificate for a new key, presenting the
// current certificate, and keeps both once they are written.
func (id *Identity) Renew(ctx context.Context) error {
	key, csr, err := NewKey()
	if err != nil {
		return err
	}
	var res protocol.RenewResult
	if err := post(ctx, id.hubTLS(), id.hub+protocol.RenewPath, protocol.RenewRequest{CSR: string(csr)}, &res, protocol.DecodeRenewResult, id.noteDate); err != nil {
		return fmt.Errorf("identity: renew: %w", err)
	}
	if err := write(id.files, key, []byte(res.Certificate), []byte(res.CAChain)); err != nil {
		return fmt.Errorf("identity: renew: %w", err)
	}
	return id.reload()
}

// Run renews the certificate when it is due, checking every period until
// ctx ends; a failure is tried again at the next check. It reads the hub's
// clock first, and again each SyncEvery.
func (id *Identity) Run(ctx context.Context, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if !id.synced() {
			if err := id.SyncClock(ctx); err != nil {
				log.Warn("the hub's clock not read; the certificate is judged by the last read, or the kiosk's own", "err", err)
			}
		}
		if id.Expired() {
			log.Error("the kiosk's certificate expired; enroll again with a new code from ops (hub kiosk add)", "expired", id.Leaf().NotAfter)
		} else if id.Due() {
			if err := id.Renew(ctx); err != nil {
				log.Warn("certificate not renewed yet; tried again later", "err", err, "expires", id.Leaf().NotAfter)
			} else {
				log.Info("certificate renewed", "until", id.Leaf().NotAfter)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// NewKey makes a P-256 key and a CSR for it.
func NewKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "frank kiosk"}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: csr: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// Enroll trades a one-time code for a certificate: it makes the key, sends
// the CSR to hub over HTTPS pinned to pin (plain HTTP only to loopback),
// and writes the key, certificate and CA chain into files only once the
// hub has answered. Nothing is written on any failure.
func Enroll(ctx context.Context, hub, code, pin string, files Files) (*protocol.EnrollResult, error) {
	key, csr, err := NewKey()
	if err != nil {
		return nil, err
	}
	var tc *tls.Config
	if pin != "" {
		tc = protocol.PinnedTLS(pin)
	}
	var res protocol.EnrollResult
	if err := post(ctx, tc, hub+protocol.EnrollPath, protocol.EnrollRequest{Code: code, CSR: string(csr)}, &res, protocol.DecodeEnrollResult, nil); err != nil {
		return nil, err
	}
	if res.Certificate == "" {
		return nil, errors.New("the hub sent no certificate")
	}
	if err := write(files, key, []byte(res.Certificate), []byte(res.CAChain)); err != nil {
		return nil, err
	}
	return &res, nil
}

// post sends v as JSON and decodes the answer with decode into out; the
// answer's headers go to headers, if set.
func post[T any](ctx context.Context, tc *tls.Config, url string, v any, out *T, decode func([]byte) (*T, error), headers func(http.Header)) error {
	body, _ := json.Marshal(v)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("asking the hub: %w", err)
	}
	defer resp.Body.Close()
	if headers != nil {
		headers(resp.Header)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, protocol.MaxMessageBytes))
	if err != nil {
		return fmt.Errorf("reading the hub's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		if pe := protocol.DecodeHTTPError(b); pe != nil {
			return fmt.Errorf("the hub refused: %s: %s", pe.Code, pe.Message)
		}
		return fmt.Errorf("the hub answered %s", resp.Status)
	}
	r, err := decode(b)
	if err != nil {
		return err
	}
	*out = *r
	return nil
}

// write puts the identity's files in place, the key last so that a
// half-written identity never pairs a new key with an old certificate.
func write(files Files, key *ecdsa.PrivateKey, certPEM, caPEM []byte) error {
	steps, err := writeSteps(files, key, certPEM, caPEM)
	if err != nil {
		return err
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// writeSteps are write's steps in order, each durable once done: a power
// cut may stop them after any one, and Load (rollForward) then finds the
// old pair or finishes the new one.
func writeSteps(files Files, key *ecdsa.PrivateKey, certPEM, caPEM []byte) ([]func() error, error) {
	if _, err := tls.X509KeyPair(certPEM, keyPEM(key)); err != nil {
		return nil, fmt.Errorf("the certificate is not for our key: %w", err)
	}
	var steps []func() error
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{files.CA, caPEM, 0o644}, {files.Cert + ".new", certPEM, 0o644}, {files.Key + ".new", keyPEM(key), 0o600}} {
		steps = append(steps, func() error { return WriteFile(f.path, f.data, f.mode) })
	}
	// Key and certificate go in as a pair, one rename each; a cut between
	// leaves them mismatched, and the next Load renames the other in.
	for _, p := range []string{files.Cert, files.Key} {
		steps = append(steps, func() error {
			if err := os.Rename(p+".new", p); err != nil {
				return fmt.Errorf("write %s: %w", p, err)
			}
			if err := SyncDir(filepath.Dir(p)); err != nil {
				return fmt.Errorf("write %s: %w", p, err)
			}
			return nil
		})
	}
	return steps, nil
}

func keyPEM(key *ecdsa.PrivateKey) []byte {
	der, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// WriteFile writes data atomically with mode, synced, and syncs its
// directory. Run as root (an installer with sudo), the file goes to the
// owner of its directory, the kiosk's service user.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if os.Geteuid() == 0 {
		if fi, err := os.Stat(dir); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				if err := tmp.Chown(int(st.Uid), int(st.Gid)); err != nil {
					tmp.Close()
					return fmt.Errorf("write %s: %w", path, err)
				}
			}
		}
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := SyncDir(dir); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// SyncDir makes the entries of dir durable: a rename into it survives a
// power cut only once its directory is synced.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
