package e2e

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/verify"
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
	if out, err := d.HubWithEnv([]string{"FRANK_OPERATOR_PASSWORD=counter staff pw"}, "operator", "add", "cora", "--role", "staff", "--stores", "void-store"); err != nil {
		t.Fatal(err, out)
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Transport: d.Client().Transport, Jar: jar}
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	post := func(page, action string, form url.Values) string {
		t.Helper()
		if page != "" {
			resp, err := c.Get(d.HubURL() + page)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if m := csrf.FindSubmatch(b); m != nil {
				form.Set("csrf", string(m[1]))
			}
		}
		resp, err := c.PostForm(d.HubURL()+action, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	post("/console/login", "/console/login", url.Values{"login": {"cora"}, "password": {"counter staff pw"}})
	if page := post("/console/stock", "/console/refunds", url.Values{"label": {in.Label.String()}, "reason": {"wrong class"}, "handed_in": {"yes"}}); !strings.Contains(page, "Refunded") {
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
	out, err = verifyCmd("--authority", d.AuthorityFile(), "--certificates", certs)
	if err != nil || !strings.Contains(out, `"void_list_checked":false`) {
		t.Fatalf("offline without a void list: %v\n%s", err, out)
	}
}
