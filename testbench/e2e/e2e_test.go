package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/softhsm"
	"github.com/frank-postage/frank/testbench/verify"
)

var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// -short is the race pass: unit and in-process tests only. These
		// run binaries built without -race, Chromium and QEMU; the full
		// pass runs them.
		fmt.Println("e2e: the whole system runs in the full pass, not under -short")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "frank-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	// The binaries as shipped, and a kiosk with the power-cut tests' hook.
	for _, args := range [][]string{
		{"build", "-o", dir + "/", "../../hub/cmd/hub", "../../appliance/cmd/kiosk", "../cmd/testbench"},
		{"build", "-tags", "crashtest", "-o", dir + "/kiosk-crashtest", "../../appliance/cmd/kiosk"},
	} {
		cmd := exec.Command("go", args...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: building the binaries:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func output(t *testing.T) io.Writer {
	if testing.Verbose() {
		return os.Stderr
	}
	return io.Discard
}

// readBoth reads a label with gozxing and with zxing-cpp, which must agree.
func readBoth(t *testing.T, png string) []byte {
	t.Helper()
	a, err := verify.ReadPNG(png)
	if err != nil {
		t.Fatalf("gozxing: %v", err)
	}
	b, err := verify.ReadZXing(context.Background(), png)
	if err != nil {
		t.Fatalf("independent reader: %v", err)
	}
	if !bytes.Equal(a, b) {
		t.Fatalf("readers disagree:\ngozxing   %x\nzxing-cpp %x", a, b)
	}
	if len(b) != protocol.IndiciumLen {
		t.Fatalf("read %d bytes, want %d", len(b), protocol.IndiciumLen)
	}
	return b
}

// A stamp sold at the kiosk comes out of the printer, reads back with an
// independent reader, verifies against the hub's published key, and says
// what was sold.
func TestSaleEndToEnd(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d, err := demo.Start(ctx, demo.Config{BinDir: binDir, Dir: dir, KioskID: "e2e-kiosk", ZIP: "02134", Output: output(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	var labels []string
	for _, w := range []int64{20_000, 40_000} { // 1 oz then 2 oz letters
		next := d.Printer().Next()
		d.Scale().SetWeight(w) // the letter goes on the scale, which prices it
		order := map[string]any{"rate_class": "1100", "weight_mg": w,
			"payment": protocol.Payment{Method: protocol.PayCardToken, Token: "tok_approve"}}
		status, body, err := d.Sell(ctx, order)
		if err != nil || status != http.StatusOK {
			t.Fatalf("sale: %d %s %v", status, body, err)
		}
		select {
		case p := <-next:
			labels = append(labels, p)
		case <-time.After(30 * time.Second):
			t.Fatal("no label printed")
		}
	}
	keys, err := verify.FetchKeys(ctx, d.HubURL(), d.Client())
	if err != nil {
		t.Fatal(err)
	}
	// However many workers this machine gets, each MPSD was funded once
	// ($1,000) and its stamps' registers follow one another.
	wantPostage := []protocol.Mills{780, 1070}
	lastAR := map[uint32]protocol.Mills{}
	for i, png := range labels {
		in, err := keys.Verify(readBoth(t, png))
		if err != nil {
			t.Fatalf("%s: %v", png, err)
		}
		if in.Postage != wantPostage[i] || in.AR != lastAR[in.MPSDSerial]+in.Postage || in.AR+in.DR != 1_000_000 ||
			in.OriginZIP != 2134 || in.Date != protocol.DateOf(time.Now()) || in.Label.String() != fmt.Sprintf("%s-%02d", d.Sheets()[0], i+1) ||
			in.RateCategory != "1100" || in.MeterNumber() != protocol.MeterNumber("FR", "2N", in.MPSDSerial) || in.MPSDSerial < 50000001 {
			t.Errorf("label %d: %+v", i+1, in)
		}
		lastAR[in.MPSDSerial] = in.AR
	}
	d.Close()
	out, err := exec.Command(filepath.Join(binDir, "hub"), "ledger", "check", "--data", filepath.Join(dir, "hub"), "--log", "text").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ledger ok") {
		t.Fatalf("hub ledger check: %v\n%s", err, out)
	}
}

// startTestbench starts bin/testbench with args; its standard output
// comes line by line, and the channel closes when it exits.
func startTestbench(t *testing.T, args ...string) (*exec.Cmd, <-chan string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "testbench"), args...)
	cmd.Stderr = output(t)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 256)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return cmd, lines
}

// `make run` is `bin/testbench run`: it must print a label that an
// independent reader decodes and that verifies against the live hub.
func TestMakeRun(t *testing.T) {
	dir := t.TempDir()
	// Port 0 everywhere: the kernel picks, and the demo prints where.
	cmd, lines := startTestbench(t, "run", "--dir", dir, "--hub-https", "127.0.0.1:0",
		"--broker", "127.0.0.1:0", "--postal", "127.0.0.1:0", "--kiosk-http", "127.0.0.1:0")
	defer cmd.Process.Kill()
	var png, offline string
	deadline := time.After(90 * time.Second)
	for png == "" || offline == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("testbench run exited before printing a label")
			}
			if p, found := strings.CutPrefix(l, "Demo stamp printed: "); found {
				png = p
			}
			if _, c, found := strings.Cut(l, "offline, with no hub: "); found {
				offline = c
			}
		case <-deadline:
			t.Fatal("testbench run printed no label in 90 s")
		}
	}
	var console, token, pin string
	for running := false; !running; { // wait until it says it keeps running
		var l string
		select {
		case got, ok := <-lines:
			if !ok {
				t.Fatal("testbench run exited before it said it keeps running")
			}
			l = got
		case <-deadline:
			t.Fatal("testbench run did not say it keeps running in 90 s")
		}
		if rest, ok := strings.CutPrefix(l, "Ops console: "); ok {
			console = rest
		}
		if rest, ok := strings.CutPrefix(l, "Hub TLS fingerprint: "); ok {
			pin, _, _ = strings.Cut(rest, " ")
		}
		if _, rest, ok := strings.Cut(l, "-H 'Authorization: Bearer "); ok && strings.HasPrefix(l, "Operator API: curl --cacert ") {
			token, _, _ = strings.Cut(rest, "'")
		}
		running = strings.HasPrefix(l, "Running;")
	}
	// The console login and the API token it prints work.
	f := strings.Fields(console) // URL login ops, password PW
	if len(f) != 5 {
		t.Fatalf("no console line in the output: %q", console)
	}
	hubURL, found := strings.CutSuffix(f[0], "/console/")
	if !found || strings.HasSuffix(hubURL, ":0") {
		t.Fatalf("console at %q: want the hub's real address", f[0])
	}
	// The hub answers over HTTPS, trusted by the fingerprint it printed.
	if !strings.HasPrefix(hubURL, "https://") || pin == "" {
		t.Fatalf("the demo prints %q and fingerprint %q; want https and a fingerprint", hubURL, pin)
	}
	pinned := &http.Transport{TLSClientConfig: protocol.PinnedTLS(pin)}
	noFollow := &http.Client{Transport: pinned, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.PostForm(f[0]+"login", url.Values{"login": {"ops"}, "password": {f[4]}})
	if err != nil || resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/" {
		t.Fatalf("console login with the printed password: %v %v", resp, err)
	}
	resp.Body.Close()
	req, _ := http.NewRequest("GET", hubURL+"/api/v1/ops/fleet", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err = (&http.Client{Transport: pinned}).Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("operator API with the printed token: %v %v", resp, err)
	}
	resp.Body.Close()
	if !strings.HasPrefix(png, filepath.Join(dir, "labels")) {
		t.Fatalf("label %s is not under %s/labels", png, dir)
	}
	keys, err := verify.FetchKeys(context.Background(), hubURL, &http.Client{Transport: pinned})
	if err != nil {
		t.Fatal(err)
	}
	in, err := keys.Verify(readBoth(t, png))
	if err != nil {
		t.Fatal(err)
	}
	if in.Postage != 780 || in.RateCategory != "1100" || in.AR != 780 || in.DR != 999_220 || in.MeterNumber() != "FR2N50000001" {
		t.Fatalf("demo stamp %+v", in)
	}
	// It keeps running until interrupted, then stops cleanly.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("testbench run after Ctrl-C: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("testbench run did not stop on Ctrl-C")
	}
	verifyOffline(t, dir, offline, png)
}

// verifyOffline runs the offline verification the demo printed, with no hub
// running: the label verifies with the authority's key file and the saved
// certificates; certificates forged by someone else, a key swapped in, or
// another authority's key do not.
func verifyOffline(t *testing.T, dir, command, png string) {
	t.Helper()
	args := strings.Fields(command) // testbench verify --authority A --certificates C --void-list V PNG
	if len(args) != 9 || args[1] != "verify" || args[2] != "--authority" || args[4] != "--certificates" || args[6] != "--void-list" || args[8] != png {
		t.Fatalf("the demo printed %q as its offline verification", command)
	}
	authority, certs, voids := args[3], args[5], args[7]
	run := func(authority, certs string) (string, error) {
		out, err := exec.Command(filepath.Join(binDir, "testbench"), "verify", "--authority", authority, "--certificates", certs, "--void-list", voids, png).CombinedOutput()
		return string(out), err
	}
	if out, err := run(authority, certs); err != nil || !strings.Contains(out, `"ok":true`) || !strings.Contains(out, `"key_trusted_by":"postal authority"`) {
		t.Fatalf("offline verification: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(certs)
	if err != nil {
		t.Fatal(err)
	}
	var list []verify.Certificate
	if err := json.Unmarshal(raw, &list); err != nil || len(list) == 0 {
		t.Fatalf("saved certificates: %v %s", err, raw)
	}
	// A forger's key, certified by a forger's authority.
	forger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forgerPub, _ := x509.MarshalPKIXPublicKey(&forger.PublicKey)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(list[0].Serial)), Subject: pkix.Name{Organization: []string{"FR"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0), KeyUsage: x509.KeyUsageDigitalSignature}
	forged, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &forger.PublicKey, forger)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, v any) string {
		b, _ := json.Marshal(v)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	swapped := slices.Clone(list)
	swapped[0].PublicKeyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: forgerPub}))
	selfMade := slices.Clone(swapped)
	selfMade[0].CertificatePEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: forged}))
	otherAuthority := filepath.Join(dir, "other-authority.pem")
	os.WriteFile(otherAuthority, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: forgerPub}), 0o644)
	for name, c := range map[string][2]string{
		"a key swapped in":        {authority, write("swapped.json", swapped)},
		"a self-made certificate": {authority, write("self-made.json", selfMade)},
		"another authority's key": {otherAuthority, certs},
		"no certificates at all":  {authority, write("bare.json", []verify.Certificate{{Serial: list[0].Serial, PublicKeyPEM: list[0].PublicKeyPEM}})},
	} {
		if out, err := run(c[0], c[1]); err == nil || strings.Contains(out, `"ok":true`) {
			t.Errorf("offline verification passed with %s:\n%s", name, out)
		}
	}
}

// The kiosk answers bad orders with a code, and nothing prints.
func TestKioskRejectsBadOrder(t *testing.T) {
	ctx := context.Background()
	d, err := demo.Start(ctx, demo.Config{BinDir: binDir, Dir: t.TempDir(), Output: output(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.Scale().SetWeight(150_000)
	status, body, err := d.Sell(ctx, map[string]any{"rate_class": "1100", "weight_mg": 150_000,
		"payment": protocol.Payment{Method: protocol.PayCardToken, Token: "tok_approve"}})
	if err != nil {
		t.Fatal(err)
	}
	var answer struct {
		Error protocol.Error `json:"error"`
	}
	if err := json.Unmarshal(body, &answer); err != nil || status != http.StatusUnprocessableEntity || answer.Error.Code != protocol.CodeOverweight {
		t.Fatalf("%d %s", status, body)
	}
	if n := len(d.Printer().Labels()); n != 0 {
		t.Fatalf("%d labels printed for a refused order", n)
	}
}

// With SoftHSM2 over PKCS#11: `hub keys init` creates the key in the token,
// the hub signs there, and the printed stamp verifies against the key the
// hub publishes.
func TestSaleWithSoftHSM(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tok, err := softhsm.Setup(filepath.Join(dir, "softhsm"), "frank", "4321")
	if err != nil {
		t.Fatal(err)
	}
	d, err := demo.Start(ctx, demo.Config{BinDir: binDir, Dir: dir, Output: output(t),
		HubArgs: []string{"--hsm", "pkcs11", "--pkcs11-module", tok.Module, "--pkcs11-token", tok.Label},
		HubEnv:  []string{tok.Env, "FRANK_PKCS11_PIN=" + tok.PIN}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	next := d.Printer().Next()
	d.Scale().SetWeight(50_000)
	status, body, err := d.Sell(ctx, map[string]any{"rate_class": "1300", "weight_mg": 50_000,
		"payment": protocol.Payment{Method: protocol.PayCardToken, Token: "tok_approve"}})
	if err != nil || status != http.StatusOK {
		t.Fatalf("sale: %d %s %v", status, body, err)
	}
	var png string
	select {
	case png = <-next:
	case <-time.After(30 * time.Second):
		t.Fatal("no label printed")
	}
	keys, err := verify.FetchKeys(ctx, d.HubURL(), d.Client())
	if err != nil {
		t.Fatal(err)
	}
	in, err := keys.Verify(readBoth(t, png))
	if err != nil {
		t.Fatal(err)
	}
	if in.Postage != 1900 || in.RateCategory != "1300" {
		t.Fatalf("stamp %+v", in)
	}
	// No key material reached the hub's data directory: the soft store was never used.
	if _, err := os.Stat(filepath.Join(dir, "hub", "keys", "master.key")); err == nil {
		t.Fatal("the hub made a soft key store while using the HSM")
	}
}

// kiosk --check-config reads the config file strictly and says what it
// would run with; flags win over the file.
func TestKioskCheckConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pw := write("pw", "s3cret\n")
	good := write("good.json", `{"id":"store12-k1","origin_zip":"02134","broker":"tcp://hub:1883","password_file":"`+pw+`",
		"printer":{"path":"/dev/frank-printer","baud":9600}}`)
	scale := write("scale.json", `{"id":"store12-k1","origin_zip":"02134","broker":"tcp://hub:1883","password_file":"`+pw+`",
		"devices":{"scale":{"path":"/dev/frank-scale","baud":4800,"data_bits":7,"parity":"even","stop_bits":"2"},"scanner":{"path":"/dev/frank-scanner"}}}`)
	badLine := write("bad-line.json", `{"id":"store12-k1","origin_zip":"02134","broker":"tcp://hub:1883","password_file":"`+pw+`",
		"devices":{"scale":{"path":"/dev/frank-scale","parity":"mark"}}}`)
	typo := write("typo.json", `{"id":"store12-k1","origin_zip":"02134","brokr":"tcp://hub:1883"}`)
	run := func(args ...string) (string, int) {
		cmd := exec.Command(filepath.Join(binDir, "kiosk"), append([]string{"--check-config"}, args...)...)
		cmd.Env = []string{"PATH=/usr/bin:/bin"}
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return string(out), code
	}
	if out, code := run("--config", good); code != 0 || !strings.Contains(out, "id store12-k1, zip 02134, broker tcp://hub:1883, printer /dev/frank-printer at 9600 baud") {
		t.Fatalf("good config: %d %s", code, out)
	}
	if out, code := run("--config", good, "--broker", "tcp://other:1883"); code != 0 || !strings.Contains(out, "broker tcp://other:1883") {
		t.Fatalf("flag over file: %d %s", code, out)
	}
	// A device's line settings come from the file; a flag moves only its path.
	if out, code := run("--config", scale, "--scale", "/dev/ttyUSB3"); code != 0 || !strings.Contains(out, "scale /dev/ttyUSB3 4800 7E2") {
		t.Fatalf("scale line: %d %s", code, out)
	}
	if out, code := run("--config", badLine); code != 2 || !strings.Contains(out, `parity "mark"`) {
		t.Fatalf("bad parity: %d %s", code, out)
	}
	if out, code := run("--config", typo); code != 2 || !strings.Contains(out, "brokr") {
		t.Fatalf("typo: %d %s", code, out)
	}
	if out, code := run("--id", "k1", "--zip", "94544"); code != 2 || !strings.Contains(out, "no broker password") {
		t.Fatalf("no password: %d %s", code, out)
	}
}
