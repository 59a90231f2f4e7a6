package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/verify"
	"github.com/frank-postage/frank/testbench/wait"
)

// A stamp refunded at the counter is on the hub's void list, and the
// verifier says "voided" for it: online against the hub, and offline from
// the saved void list with the authority's key. Without a void list the
// verifier says it did not check one.
func TestRefundedStampVerifiesAsVoided(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d, err := demo.Start(ctx, demo.Config{BinDir: binDir, Dir: dir, KioskID: "void-kiosk", Store: "void-store", Output: output(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	next := d.Printer().Next()
	order := map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": protocol.Payment{Method: protocol.PayCardToken, Token: "tok_approve"}}
	if status, body, err := d.Sell(ctx, order); err != nil || status != http.StatusOK {
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
	verifyCmd := func(args ...string) (string, error) {
		out, err := exec.Command(filepath.Join(binDir, "testbench"), append([]string{"verify"}, append(args, png)...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := verifyCmd("--hub", d.HubURL(), "--fingerprint", d.Fingerprint()); err != nil || !strings.Contains(out, `"status":"valid"`) {
		t.Fatalf("before the refund: %v\n%s", err, out)
	}

	// Staff refund it at the counter, label in hand.
	staff := consoleLogin(t, d, "cora", "staff", "void-store")
	if page := staff.post("/console/stock", "/console/refunds", url.Values{"label": {in.Label.String()}, "reason": {"wrong class"}, "handed_in": {"yes"}}); !strings.Contains(page, "Refunded") {
		t.Fatalf("counter refund:\n%s", page)
	}

	// Online: the verifier reads the hub's void list.
	out, err := verifyCmd("--hub", d.HubURL(), "--fingerprint", d.Fingerprint())
	if err == nil || !strings.Contains(out, `"status":"voided"`) || !strings.Contains(out, "refund_requested") {
		t.Fatalf("online, after the refund: %v\n%s", err, out)
	}
	// Offline: the certificates and the void list saved to files.
	save := func(path, name string) string {
		t.Helper()
		resp, err := d.Client().Get(d.HubURL() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	certs, voids := save("/api/v1/certificates", "certificates.json"), save("/api/v1/voided", "voided.json")
	d.Close()
	out, err = verifyCmd("--authority", d.AuthorityFile(), "--certificates", certs, "--void-list", voids)
	if err == nil || !strings.Contains(out, `"status":"voided"`) {
		t.Fatalf("offline with the void list: %v\n%s", err, out)
	}
	// Offline without the void list it will not say "valid": it refuses to
	// run, and with --no-void-list answers valid_unchecked, exit 3.
	out, err = verifyCmd("--authority", d.AuthorityFile(), "--certificates", certs)
	if err == nil || strings.Contains(out, `"status"`) {
		t.Fatalf("offline without a void list: %v\n%s", err, out)
	}
	out, err = verifyCmd("--authority", d.AuthorityFile(), "--certificates", certs, "--no-void-list")
	if err == nil || !strings.Contains(out, `"status":"valid_unchecked"`) || !strings.Contains(out, `"void_list_checked":false`) {
		t.Fatalf("offline with --no-void-list: %v\n%s", err, out)
	}
}

// console is an operator's session on a demo hub's console, over HTTPS.
type console struct {
	t *testing.T
	d *demo.Demo
	c *http.Client
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// consoleLogin makes an operator and logs in as it.
func consoleLogin(t *testing.T, d *demo.Demo, login, role, stores string) *console {
	t.Helper()
	pw := "password of " + login
	args := []string{"operator", "add", login, "--role", role}
	if stores != "" {
		args = append(args, "--stores", stores)
	}
	if out, err := d.HubWithEnv([]string{"FRANK_OPERATOR_PASSWORD=" + pw}, args...); err != nil {
		t.Fatal(err, out)
	}
	jar, _ := cookiejar.New(nil)
	c := &console{t: t, d: d, c: &http.Client{Transport: d.Client().Transport, Jar: jar}}
	c.post("/console/login", "/console/login", url.Values{"login": {login}, "password": {pw}})
	return c
}

// post sends a form with the CSRF token of page, and returns the answer.
func (c *console) post(page, action string, form url.Values) string {
	c.t.Helper()
	resp, err := c.c.Get(c.d.HubURL() + page)
	if err != nil {
		c.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if m := csrfField.FindSubmatch(b); m != nil {
		form.Set("csrf", string(m[1]))
	}
	resp, err = c.c.PostForm(c.d.HubURL()+action, form)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ = io.ReadAll(resp.Body)
	return string(b)
}

// While the kiosk sells without pause, staff refund stamps at the counter,
// and ops rotate the signing key and the control-code key from the command
// line (other processes than the hub, as ops would run them). The running
// hub takes up both keys, and afterwards hub ledger check passes and the
// postal authority accepts the period's report, every signature and
// register checked.
func TestRotationsAndRefundsUnderLoad(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d, err := demo.Start(ctx, demo.Config{BinDir: binDir, Dir: dir, KioskID: "load-kiosk", Store: "load-store", Sheets: 6, Output: output(t),
		HubArgs: []string{"--key-check", "200ms"}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	start := time.Now().UTC()
	type sold struct{ label, meter string }
	sales := make(chan sold, 64)
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { // the load: one sale after another, as fast as the kiosk prints
		defer close(sales)
		order := map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": protocol.Payment{Method: protocol.PayCardToken, Token: "tok_approve"}}
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			status, body, err := d.Sell(ctx, order)
			if err != nil || status != http.StatusOK {
				done <- fmt.Errorf("sale: %d %s %v", status, body, err)
				return
			}
			var rc struct {
				Labels []struct {
					LabelSerial string `json:"label_serial"`
					MeterNumber string `json:"meter_number"`
				} `json:"labels"`
			}
			json.Unmarshal(body, &rc)
			for _, l := range rc.Labels {
				sales <- sold{l.LabelSerial, l.MeterNumber}
			}
		}
	}()
	next := func() sold {
		t.Helper()
		select {
		case s, ok := <-sales:
			if !ok {
				t.Fatalf("the load stopped: %v", <-done)
			}
			return s
		case <-time.After(30 * time.Second):
			t.Fatal("no sale in 30 s")
		}
		return sold{}
	}
	staff := consoleLogin(t, d, "lola", "staff", "load-store")
	refund := func() {
		t.Helper()
		s := next()
		if page := staff.post("/console/stock", "/console/refunds", url.Values{"label": {s.label}, "reason": {"not needed"}, "handed_in": {"yes"}}); !strings.Contains(page, "Refunded") {
			t.Fatalf("counter refund of %s:\n%s", s.label, page)
		}
	}
	next()
	refund()
	if out, err := d.Hub("keys", "rotate"); err != nil {
		t.Fatalf("hub keys rotate: %v\n%s", err, out)
	}
	refund()
	if out, err := d.Hub("keys", "rotate-mac"); err != nil || !strings.Contains(out, "generation 2") {
		t.Fatalf("hub keys rotate-mac: %v\n%s", err, out)
	}
	refund()
	// The running hub signs with key 2 within its key check.
	keys, err := verify.FetchKeys(ctx, d.HubURL(), d.Client())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		png := <-d.Printer().Next()
		in, err := keys.Verify(readBoth(t, png))
		if err != nil {
			t.Fatal(err)
		}
		if in.CertSerial == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the running hub never signed with the rotated key")
		}
	}
	for range 3 {
		next()
	}
	close(stop)
	for range sales {
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	out, err := d.Hub("report", "--from", start.Format(time.DateOnly), "--to", time.Now().UTC().Format(time.RFC3339Nano))
	if err != nil || !strings.Contains(out, "accepted by the postal authority") {
		t.Fatalf("hub report: %v\n%s", err, out)
	}
	d.Close()
	out, err = d.Hub("ledger", "check")
	if err != nil || !strings.Contains(out, "ledger ok") {
		t.Fatalf("hub ledger check: %v\n%s", err, out)
	}
}

// A kiosk with a scanner over its print head, all real binaries and
// simulated devices: the stamp prints when the label under the head is
// the one it was signed for; a wrongly loaded label fails the stamp before
// anything prints, the hub voids it, and the kiosk stops selling until
// staff reload the stock.
func TestHeadScannerCatchesWrongStock(t *testing.T) {
	ctx := context.Background()
	d, err := demo.Start(ctx, demo.Config{BinDir: binDir, Dir: t.TempDir(), KioskID: "head-kiosk", Sheets: 1, HeadScanner: true, Output: output(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	sheet := d.Sheets()[0]
	order := map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": protocol.Payment{Method: protocol.PayCardToken, Token: "tok_approve"}}
	sell := func() (int, string) {
		t.Helper()
		status, body, err := d.Sell(ctx, order)
		if err != nil {
			t.Fatal(err)
		}
		return status, string(body)
	}
	next := d.Printer().Next()
	if err := d.HeadScanner().Scan(sheet + "-01"); err != nil {
		t.Fatal(err)
	}
	if status, body := sell(); status != http.StatusOK || !strings.Contains(body, `"outcome":"printed"`) {
		t.Fatalf("the right label under the head: %d %s", status, body)
	}
	select {
	case <-next:
	case <-time.After(30 * time.Second):
		t.Fatal("nothing printed")
	}
	// The next label out is -05: a sheet fed in wrongly.
	if err := d.HeadScanner().Scan(sheet + "-05"); err != nil {
		t.Fatal(err)
	}
	status, body := sell()
	if status != http.StatusOK || !strings.Contains(body, `"reason":"wrong_label"`) || strings.Contains(body, `"outcome":"printed"`) {
		t.Fatalf("the wrong label under the head: %d %s", status, body)
	}
	if n := len(d.Printer().Labels()); n != 1 {
		t.Fatalf("%d labels printed, want 1", n)
	}
	resp, err := http.Get(d.KioskURL() + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		InService bool     `json:"in_service"`
		Reasons   []string `json:"reasons"`
	}
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if st.InService || !slices.Contains(st.Reasons, "wrong_stock") {
		t.Fatalf("kiosk status after the wrong label: %+v", st)
	}
	if status, body := sell(); status == http.StatusOK {
		t.Fatalf("sold with the wrong stock in: %s", body)
	}
	// The hub heard the label failed: its indicium is void.
	var voids []verify.Void
	wait.For(t, 10*time.Second, "the void list", func() bool {
		r, err := d.Client().Get(d.HubURL() + "/api/v1/voided")
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(r.Body).Decode(&voids)
		r.Body.Close()
		return len(voids) > 0
	})
	if len(voids) != 1 || voids[0].Label != sheet+"-02" {
		t.Fatalf("void list %+v, want the stamp for %s-02", voids, sheet)
	}
}
