package hub

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/frank-postage/frank/hub/ca"
	"github.com/frank-postage/frank/protocol"
)

// hubTLS is the hub's own TLS identity: a P-256 key in a file of its data
// directory (mode 0600; a TLS handshake signs with it, and an HSM session
// cannot be shared between handshakes), and the certificates the device
// CA issues for it, a server certificate for HTTPS and the broker's mqtts
// listener and a client certificate for the broker. Both are issued again
// once a third of their life is left.
type hubTLS struct {
	ca    *ca.CA
	key   *ecdsa.PrivateKey
	name  string   // the hub's broker user, its client certificate's subject
	hosts []string // the server certificate's names
	files [2]string
	now   func() time.Time

	mu     sync.RWMutex
	server *tls.Certificate
	client *tls.Certificate
}

// loadKey reads the hub's TLS key from dir, making it on first use.
func loadKey(dir string) (*ecdsa.PrivateKey, error) {
	path := filepath.Join(dir, "tls", "hub.key")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("hub: tls key: %w", err)
		}
		if err := writeFileSync(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, fmt.Errorf("hub: tls key: %w", err)
		}
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("hub: tls key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("hub: tls key %s: no PEM", path)
	}
	k, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("hub: tls key %s: %w", path, err)
	}
	return k, nil
}

func writeFileSync(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	// A .tmp left by a crash keeps the mode it was made with: set it.
	if err := f.Chmod(mode); err != nil {
		f.Close()
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
	return os.Rename(tmp, path)
}

// renew issues whichever certificate is missing or past two thirds of its
// life from its issue (its NotBefore is the CA's, much earlier).
func (t *hubTLS) renew(ctx context.Context) error {
	due := func(c *tls.Certificate) bool {
		if c == nil || c.Leaf == nil {
			return true
		}
		return t.now().After(c.Leaf.NotAfter.Add(-t.ca.HubTTL() / 3))
	}
	t.mu.RLock()
	needServer, needClient := t.files[0] == "" && due(t.server), due(t.client)
	t.mu.RUnlock()
	if t.files[0] != "" && t.server == nil {
		c, err := tls.LoadX509KeyPair(t.files[0], t.files[1])
		if err != nil {
			return fmt.Errorf("hub: tls certificate files: %w", err)
		}
		t.mu.Lock()
		t.server = &c
		t.mu.Unlock()
	}
	issue := func(hosts []string) (*tls.Certificate, error) {
		der, err := t.ca.IssueHub(ctx, &t.key.PublicKey, t.name, hosts)
		if err != nil {
			return nil, err
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		// The CA goes along, so a kiosk that pinned it finds it.
		return &tls.Certificate{Certificate: [][]byte{der, t.ca.Certificate().Raw}, PrivateKey: t.key, Leaf: leaf}, nil
	}
	if needServer {
		c, err := issue(t.hosts)
		if err != nil {
			return fmt.Errorf("hub: server certificate: %w", err)
		}
		t.mu.Lock()
		t.server = c
		t.mu.Unlock()
	}
	if needClient {
		c, err := issue(nil)
		if err != nil {
			return fmt.Errorf("hub: broker client certificate: %w", err)
		}
		t.mu.Lock()
		t.client = c
		t.mu.Unlock()
	}
	return nil
}

// serverConfig serves the current server certificate.
func (t *hubTLS) serverConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		t.mu.RLock()
		defer t.mu.RUnlock()
		return t.server, nil
	}}
}

// clientConfig presents the hub's client certificate to a broker whose
// certificate the device CA issued.
func (t *hubTLS) clientConfig(serverName string) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: t.ca.Pool(), ServerName: serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			t.mu.RLock()
			defer t.mu.RUnlock()
			return t.client, nil
		}}
}

// defaultHosts are the names a hub's server certificate carries when none
// are configured: this machine's, and loopback.
func defaultHosts() []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		hosts = append(hosts, h)
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ip, ok := a.(*net.IPNet); ok && !ip.IP.IsLoopback() && !ip.IP.IsLinkLocalUnicast() {
				hosts = append(hosts, ip.IP.String())
			}
		}
	}
	return hosts
}

// startTLS makes sure the device CA exists (the soft store makes one on
// first start, as it does the signing key; with an HSM, ops run `hub ca
// init`), and loads or issues the hub's own certificates.
func (h *Hub) startTLS(ctx context.Context) error {
	if h.ca.Certificate() == nil {
		if h.cfg.HSM != "soft" {
			return fmt.Errorf("hub: start: %w", ca.ErrNoCA)
		}
		if err := h.ca.Init(ctx); err != nil && !errors.Is(err, ca.ErrExists) {
			return fmt.Errorf("hub: start: %w", err)
		}
		if err := h.ca.Load(ctx); err != nil {
			return fmt.Errorf("hub: start: %w", err)
		}
		h.log.Info("device CA created", "fingerprint", protocol.Fingerprint(h.ca.Certificate()))
	}
	key, err := loadKey(h.cfg.DataDir)
	if err != nil {
		return err
	}
	h.tls = &hubTLS{ca: h.ca, key: key, name: h.cfg.BrokerUser, hosts: h.cfg.TLSHosts, now: h.Now}
	if h.cfg.TLS == "files" {
		h.tls.files = [2]string{h.cfg.TLSCert, h.cfg.TLSKey}
	}
	return h.tls.renew(ctx)
}

// renewTLS issues the hub's certificates again when they are due.
func (h *Hub) renewTLS(ctx context.Context) {
	if err := h.tls.renew(ctx); err != nil {
		h.log.Error("hub certificates not renewed; tried again in an hour", "err", err)
	}
}

// crlFile keeps CRLFile holding a fresh revocation list, for an external
// broker's crlfile: signed again within seconds of a revocation by any hub
// on the database, and hourly anyway; each list is good for a day.
type crlFile struct {
	revoked map[string]bool
	at      time.Time
}

func (f *crlFile) write(ctx context.Context, h *Hub) {
	revoked, err := h.ca.Revoked(ctx)
	if err != nil {
		h.log.Error("CRL file not written", "path", h.cfg.CRLFile, "err", err)
		return
	}
	if !f.at.IsZero() && maps.Equal(revoked, f.revoked) && h.Now().Sub(f.at) < time.Hour {
		return
	}
	der, err := h.ca.CRL(ctx, 24*time.Hour)
	if err == nil {
		err = writeFileSync(h.cfg.CRLFile, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644)
	}
	if err != nil {
		h.log.Error("CRL file not written", "path", h.cfg.CRLFile, "err", err)
		return
	}
	f.revoked, f.at = revoked, h.Now()
}

// CA returns the device CA.
func (h *Hub) CA() *ca.CA { return h.ca }

// URL is where the hub's web side answers, after Start.
func (h *Hub) URL() string {
	if h.cfg.TLS == "off" {
		return "http://" + h.HTTPAddr
	}
	return "https://" + h.HTTPAddr
}

// TLSFingerprint is the fingerprint kiosks pin to enroll: of the device
// CA, which signs the hub's HTTPS certificate, or with TLS from files, of
// the hub's own certificate.
func (h *Hub) TLSFingerprint() string {
	if h.cfg.TLS == "files" {
		if c, err := tls.LoadX509KeyPair(h.cfg.TLSCert, h.cfg.TLSKey); err == nil {
			if leaf, err := x509.ParseCertificate(c.Certificate[0]); err == nil {
				return protocol.Fingerprint(leaf)
			}
		}
		return ""
	}
	if h.cfg.TLS == "off" {
		return "" // a proxy serves TLS; its fingerprint is not ours to know
	}
	if c := h.ca.Certificate(); c != nil {
		return protocol.Fingerprint(c)
	}
	return ""
}

// hostOnly is the host of a host:port.
func hostOnly(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// BrokerCert writes an external broker's TLS identity into dir: broker.key
// (made here, mode 0600), broker.crt (a server certificate for hosts from
// the device CA, with the CA after it), ca.crt (the CA, which checks
// kiosks' certificates) and crl.pem (the revocation list, which a running
// hub keeps current with --crl-file). It returns the files written.
func (h *Hub) BrokerCert(ctx context.Context, hosts []string, dir string) ([]string, error) {
	if h.ca.Certificate() == nil {
		return nil, ca.ErrNoCA
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("hub: broker certificate: %w", err)
	}
	der, err := h.ca.IssueHub(ctx, &key.PublicKey, protocol.HubPrefix+"-broker", hosts)
	if err != nil {
		return nil, fmt.Errorf("hub: broker certificate: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("hub: broker certificate: %w", err)
	}
	crl, err := h.ca.CRL(ctx, 24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("hub: broker certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("hub: broker certificate: %w", err)
	}
	out := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"broker.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600},
		{"broker.crt", append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), h.ca.CertPEM()...), 0o644},
		{"ca.crt", h.ca.CertPEM(), 0o644},
		{"crl.pem", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl}), 0o644},
	}
	var files []string
	for _, f := range out {
		p := filepath.Join(dir, f.name)
		if err := writeFileSync(p, f.data, f.mode); err != nil {
			return nil, fmt.Errorf("hub: broker certificate: %w", err)
		}
		files = append(files, p)
	}
	return files, nil
}
