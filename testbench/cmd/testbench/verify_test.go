package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"image/png"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/label"
	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/verify"
)

// labelBench is what testbench verify reads: a printed label, the authority's
// key, the hub's certificates (key 1 certified, key 2 not) and void lists.
type labelBench struct {
	dir, png, bare, authority, certs string
	in                               *protocol.Indicium
}

func newLabelBench(t *testing.T) *labelBench {
	t.Helper()
	dir := t.TempDir()
	ak, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	aTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test postal authority"}}
	var certs []verify.Certificate
	var keys []*ecdsa.PrivateKey
	for serial := uint32(1); serial <= 2; serial++ {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		c := verify.Certificate{Serial: serial, Algorithm: protocol.AlgECDSAP256,
			PublicKeyPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}
		if serial == 1 {
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(serial)), Subject: pkix.Name{Organization: []string{"FR"}},
				NotBefore: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2028, 1, 1, 0, 0, 0, 0, time.UTC)}
			cert, err := x509.CreateCertificate(rand.Reader, tmpl, aTmpl, &k.PublicKey, ak)
			if err != nil {
				t.Fatal(err)
			}
			c.CertificatePEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert}))
		}
		certs, keys = append(certs, c), append(keys, k)
	}
	b := &labelBench{dir: dir}
	adr, _ := x509.MarshalPKIXPublicKey(&ak.PublicKey)
	b.authority = b.write(t, "authority.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: adr}))
	raw, _ := json.Marshal(certs)
	b.certs = b.write(t, "certificates.json", raw)
	b.in, b.png = b.label(t, 1, keys[0], "label.png")
	_, b.bare = b.label(t, 2, keys[1], "bare.png")
	return b
}

// label prints a stamp signed by k as certificate serial to a PNG.
func (b *labelBench) label(t *testing.T, serial uint32, k *ecdsa.PrivateKey, name string) (*protocol.Indicium, string) {
	t.Helper()
	in, m, err := prototest.Resign(serial, k)
	if err != nil {
		t.Fatal(err)
	}
	img, err := label.Render(label.FromIndicium(&in, m, "FIRST-CLASS"), label.Size{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return &in, b.write(t, name, buf.Bytes())
}

func (b *labelBench) write(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(b.dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// voids writes a void list, listing the labelBench's stamp if voided.
func (b *labelBench) voids(t *testing.T, voided bool) string {
	t.Helper()
	list := []verify.Void{}
	if voided {
		list = append(list, verify.Void{Meter: b.in.MeterNumber(), Label: b.in.Label.String(), AR: int64(b.in.AR), Reason: "refund_requested"})
	}
	raw, _ := json.Marshal(list)
	return b.write(t, "voided.json", raw)
}

// run runs testbench verify, and returns its exit code, stdout and stderr.
func run(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := runVerify(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// Offline, a stamp is "valid" only once the void list was checked: without
// --void-list the command refuses to run, and --no-void-list answers
// "valid_unchecked" with a nonzero exit.
func TestVerifyOfflineChecksVoidList(t *testing.T) {
	b := newLabelBench(t)
	offline := []string{"--authority", b.authority, "--certificates", b.certs}
	with := func(extra ...string) []string { return append(append(append([]string{}, offline...), extra...), b.png) }

	if code, out, errOut := run(with()...); code != exitUsage || strings.Contains(out, `"valid"`) || !strings.Contains(errOut, "--void-list") {
		t.Errorf("offline, no void list: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := run(with("--void-list", b.voids(t, true))...); code != exitRefused || !strings.Contains(out, `"status":"voided"`) ||
		!strings.Contains(out, "refund_requested") || !strings.Contains(out, `"ok":false`) {
		t.Errorf("offline, voided: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := run(with("--void-list", b.voids(t, false))...); code != exitValid || !strings.Contains(out, `"status":"valid"`) ||
		!strings.Contains(out, `"ok":true`) || !strings.Contains(out, `"void_list_checked":true`) {
		t.Errorf("offline, not voided: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := run(with("--no-void-list")...); code != exitUnchecked || !strings.Contains(out, `"status":"valid_unchecked"`) ||
		!strings.Contains(out, `"ok":false`) || strings.Contains(out, `"status":"valid"`) {
		t.Errorf("offline, --no-void-list: exit %d\n%s%s", code, out, errOut)
	}
	// A refused stamp beside an unchecked one makes the exit code 1.
	if code, out, errOut := run(append(with("--no-void-list"), b.bare)...); code != exitRefused || !strings.Contains(out, "not certified") {
		t.Errorf("offline, --no-void-list, with an uncertified key's stamp: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := run(with("--no-void-list", "--void-list", b.voids(t, false))...); code != exitUsage || out != "" {
		t.Errorf("both void-list flags: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := run("--hub", "http://127.0.0.1:1", "--no-void-list", b.png); code != exitUsage || out != "" {
		t.Errorf("--no-void-list online: exit %d\n%s%s", code, out, errOut)
	}
}

// A key the authority never certified does not stop the certified key's
// stamps from verifying; its own stamp is refused.
func TestVerifyOfflineUncertifiedKey(t *testing.T) {
	b := newLabelBench(t)
	code, out, errOut := run("--authority", b.authority, "--certificates", b.certs, "--void-list", b.voids(t, false), b.png, b.bare)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitRefused || len(lines) != 2 || !strings.Contains(lines[0], `"status":"valid"`) ||
		!strings.Contains(lines[1], `"ok":false`) || !strings.Contains(lines[1], "not certified") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
}

// Online, each stamp's ledger status is asked: a stamp the hub never made
// is refused even with a good signature and an empty void list.
func TestVerifyOnlineAsksLedger(t *testing.T) {
	b := newLabelBench(t)
	certs, err := os.ReadFile(b.certs)
	if err != nil {
		t.Fatal(err)
	}
	status, asked := "valid", 0
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/certificates":
			w.Write(certs)
		case "/api/v1/voided":
			w.Write([]byte(`[]`))
		case "/api/v1/indicia/" + b.in.MeterNumber() + "/" + b.in.Label.String():
			asked++
			if status == "" {
				http.Error(w, "gone", http.StatusInternalServerError)
				return
			}
			json.NewEncoder(w).Encode(map[string]string{"meter": b.in.MeterNumber(), "label": b.in.Label.String(), "status": status, "reason": "refund_requested"})
		default:
			http.NotFound(w, r)
		}
	}))
	defer hub.Close()
	for _, c := range []struct {
		status string
		code   int
		want   string
	}{
		{"valid", exitValid, `"status":"valid"`},
		{"unknown", exitRefused, `"status":"unknown"`},
		{"voided", exitRefused, `"status":"voided"`},
		{"", exitRefused, `"error":`},
	} {
		status = c.status
		code, out, errOut := run("--hub", hub.URL, "--authority", b.authority, b.png)
		if code != c.code || !strings.Contains(out, c.want) || (c.code != exitValid && strings.Contains(out, `"ok":true`)) {
			t.Errorf("ledger says %q: exit %d\n%s%s", c.status, code, out, errOut)
		}
		if c.code == exitValid && !strings.Contains(out, `"ledger_checked":true`) {
			t.Errorf("ledger_checked missing: %s", out)
		}
	}
	if asked != 4 {
		t.Errorf("the ledger was asked %d times, want 4", asked)
	}
}
