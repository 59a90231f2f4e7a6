package web_test

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
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/releases"
	"github.com/frank-postage/frank/hub/web"
	"github.com/frank-postage/frank/protocol"
)

// oneRelease is a store with one published release, 2.0.0 for arm64.
type oneRelease []byte

func (b oneRelease) Binary(_ context.Context, version, arch string) ([]byte, time.Time, error) {
	if version != "2.0.0" || arch != "arm64" {
		return nil, time.Time{}, releases.ErrUnknown
	}
	return b, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), nil
}

// releaseHub serves bin as release 2.0.0 over HTTPS that asks for kiosk
// certificates, under a clock the test moves, to kiosks whose clients
// client makes.
type releaseHub struct {
	t     *testing.T
	url   string
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	clock atomic.Int64 // unix nanoseconds
}

func newReleaseHub(t *testing.T, bin []byte) *releaseHub {
	t.Helper()
	h := &releaseHub{t: t}
	h.clock.Store(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	h.caKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test device CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &h.caKey.PublicKey, h.caKey)
	if err != nil {
		t.Fatal(err)
	}
	h.ca, _ = x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(h.ca)
	s := &web.Server{Releases: oneRelease(bin), Now: h.now, Log: quiet}
	srv := httptest.NewUnstartedServer(s.Handler())
	srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	h.url = srv.URL
	return h
}

func (h *releaseHub) now() time.Time          { return time.Unix(0, h.clock.Load()).UTC() }
func (h *releaseHub) advance(d time.Duration) { h.clock.Add(int64(d)) }

// client is an HTTPS client presenting kiosk id's certificate, on
// connections of its own.
func (h *releaseHub) client(id string) *http.Client {
	h.t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: id},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, h.ca, &key.PublicKey, h.caKey)
	if err != nil {
		h.t.Fatal(err)
	}
	cert := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }}}
	h.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// get asks for the release, from byte from on when from > 0.
func (h *releaseHub) get(c *http.Client, from int) *http.Response {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.url+releases.Path+"/2.0.0/arm64", nil)
	if from > 0 {
		req.Header.Set("Range", "bytes="+strconv.Itoa(from)+"-")
	}
	resp, err := c.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp
}

// download fetches the release and returns the status, the Retry-After
// header and the body.
func (h *releaseHub) download(c *http.Client, from int) (int, string, []byte) {
	h.t.Helper()
	resp := h.get(c, from)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Retry-After"), b
}

// A kiosk that downloads a release over and over is refused with 429 and
// a Retry-After once it was sent six releases' worth, in the one error
// shape, and served again after that wait; another kiosk is not affected.
// Loops of tiny ranges, each of which reads the whole binary from the
// store, meet the limit too.
func TestReleaseDownloadsLimitedPerKiosk(t *testing.T) {
	bin := bytes.Repeat([]byte("kiosk 2.0.0 "), 10_000)
	h := newReleaseHub(t, bin)
	k1, k2, k3 := h.client("kiosk-1"), h.client("kiosk-2"), h.client("kiosk-3")
	for i := range 6 {
		if st, _, b := h.download(k1, 0); st != http.StatusOK || !bytes.Equal(b, bin) {
			t.Fatalf("download %d: %d, %d bytes", i+1, st, len(b))
		}
	}
	st, retry, b := h.download(k1, 0)
	var eb protocol.ErrorBody
	if st != http.StatusTooManyRequests || json.Unmarshal(b, &eb) != nil || eb.Error == nil || eb.Error.Code != protocol.CodeServiceUnavailable {
		t.Fatalf("7th download within the hour: %d %.200q, want 429 and a JSON error", st, b)
	}
	wait, err := strconv.Atoi(retry)
	if err != nil || wait < 1 || wait > 60 {
		t.Fatalf("Retry-After %q, want a few seconds", retry)
	}
	// A resume is no way around it.
	if st, _, _ := h.download(k1, len(bin)/2); st != http.StatusTooManyRequests {
		t.Fatalf("resumed download over the limit: %d, want 429", st)
	}
	if st, _, b := h.download(k2, 0); st != http.StatusOK || !bytes.Equal(b, bin) {
		t.Fatalf("another kiosk's download: %d, %d bytes", st, len(b))
	}
	h.advance(time.Duration(wait) * time.Second)
	if st, _, b := h.download(k1, len(bin)-100); st != http.StatusPartialContent || !bytes.Equal(b, bin[len(bin)-100:]) {
		t.Fatalf("after Retry-After, the resumed download: %d, %d bytes", st, len(b))
	}

	// One byte at a time: each request costs at least a fiftieth.
	one := func() int {
		req, _ := http.NewRequest(http.MethodGet, h.url+releases.Path+"/2.0.0/arm64", nil)
		req.Header.Set("Range", "bytes=0-0")
		resp, err := k3.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	n := 0
	for ; n < 1000 && one() == http.StatusPartialContent; n++ {
	}
	if n != 300 {
		t.Fatalf("%d one-byte downloads served before a 429, want 300 (6 releases' worth at 1/50 each)", n)
	}
}

// A kiosk whose connection dropped resumes its download while the hub may
// still be writing into the dead connection: the resumed one is served at
// once, not refused, and ends the one before, so a kiosk has one download
// under way at a time. Another kiosk's download goes on.
func TestReleaseDownloadResumedEndsTheOneBefore(t *testing.T) {
	bin := bytes.Repeat([]byte("0123456789abcdef"), 2<<20) // 32 MiB: the hub's writes block
	h := newReleaseHub(t, bin)
	first, other := h.get(h.client("kiosk-1"), 0), h.get(h.client("kiosk-2"), 0)
	defer first.Body.Close()
	defer other.Body.Close()
	head := make([]byte, 4096)
	if _, err := io.ReadFull(first.Body, head); err != nil || first.StatusCode != http.StatusOK {
		t.Fatalf("first download: %s, %v", first.Status, err)
	}
	// The first connection hangs; the kiosk resumes on a new one.
	st, _, b := h.download(h.client("kiosk-1"), len(head))
	if st != http.StatusPartialContent || !bytes.Equal(b, bin[len(head):]) {
		t.Fatalf("resumed download: %d, %d bytes, want 206 and the rest", st, len(b))
	}
	if rest, err := io.ReadAll(first.Body); err == nil || len(head)+len(rest) >= len(bin) {
		t.Fatalf("the download before went on: %d bytes, %v", len(head)+len(rest), err)
	}
	if b, err := io.ReadAll(other.Body); err != nil || !bytes.Equal(b, bin) {
		t.Fatalf("another kiosk's download: %d bytes, %v", len(b), err)
	}
}

// Behind a proxy that ends TLS (--tls off) no certificate names the kiosk,
// and the kiosks of a store share its address: the hub limits none of
// them, rather than have them share one budget and end each other's
// downloads; the proxy bounds them there.
func TestReleaseDownloadsBehindAProxyNotLimitedByAddress(t *testing.T) {
	bin := bytes.Repeat([]byte("frank"), 4096)
	s := &web.Server{Releases: oneRelease(bin), Log: quiet}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	for i := range 10 {
		resp, err := srv.Client().Get(srv.URL + releases.Path + "/2.0.0/arm64")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Equal(b, bin) {
			t.Fatalf("download %d from one address: %d, %d bytes", i+1, resp.StatusCode, len(b))
		}
	}
}
