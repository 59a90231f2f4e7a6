package images

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/frank-postage/frank/testbench/browser"
	"github.com/frank-postage/frank/testbench/wait"
)

// policyFile is the Chromium managed policy the kiosk package installs.
const policyFile = "kiosk/etc/chromium/policies/managed/frank-kiosk.json"

// kioskPolicy reads the packaged policy, strictly: JSON with no duplicate
// or misspelt-case keys left for Chromium to ignore.
func kioskPolicy(t *testing.T) (map[string]any, []byte) {
	t.Helper()
	b, err := os.ReadFile(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("%s: %v", policyFile, err)
	}
	if n := strings.Count(string(b), `": `); n != len(p) {
		t.Errorf("%s has %d keys but %d distinct ones", policyFile, n, len(p))
	}
	return p, b
}

// The touchscreen's browser is locked down by a managed policy: only the
// kiosk's own page may load (the origin the touchscreen script opens), and
// DevTools, downloads, printing, file dialogs, other profiles and the
// password manager are off.
func TestKioskBrowserPolicy(t *testing.T) {
	p, _ := kioskPolicy(t)
	script, err := os.ReadFile("kiosk/usr/share/frank-kiosk/touchscreen")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`url=\$\{FRANK_KIOSK_URL:-(http://[^/}]+)/\}`).FindSubmatch(script)
	if m == nil {
		t.Fatal("the touchscreen script sets no default FRANK_KIOSK_URL")
	}
	origin := string(m[1])
	num := func(n int) json.Number { return json.Number(strings.TrimSpace(string(rune('0' + n)))) }
	for name, want := range map[string]any{
		"URLBlocklist":                 []any{"*"},
		"URLAllowlist":                 []any{origin},
		"DeveloperToolsAvailability":   num(2), // disallowed
		"IncognitoModeAvailability":    num(2), // forced, as the script's --incognito asks
		"DownloadRestrictions":         num(3), // no downloads
		"PrintingEnabled":              false,
		"AllowFileSelectionDialogs":    false,
		"BrowserAddPersonEnabled":      false,
		"BrowserGuestModeEnabled":      false,
		"PasswordManagerEnabled":       false,
		"TranslateEnabled":             false,
		"AutofillAddressEnabled":       false,
		"AutofillCreditCardEnabled":    false,
		"EditBookmarksEnabled":         false,
		"ExtensionInstallBlocklist":    []any{"*"},
		"TaskManagerEndProcessEnabled": false,
	} {
		if got, ok := p[name]; !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %s is %v, want %v", policyFile, name, got, want)
		}
	}
}

// chromiumWithPolicy returns a command that runs Chromium with dir in place
// of /etc/chromium, in a mount namespace of its own: the host's /etc is
// not touched.
func chromiumWithPolicy(t *testing.T, policy map[string]any) string {
	t.Helper()
	chromium := browser.Path(t)
	need(t, "unshare", "util-linux")
	if _, err := os.Stat("/etc/chromium"); err != nil {
		t.Fatalf("/etc/chromium: %v (the Debian package chromium makes it)", err)
	}
	dir := t.TempDir()
	etc := filepath.Join(dir, "etc")
	if err := os.MkdirAll(filepath.Join(etc, "policies/managed"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(policy)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "policies/managed/frank-kiosk.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	ns := "--mount"
	if os.Geteuid() != 0 {
		ns = "--user --map-root-user --mount"
	}
	wrap := filepath.Join(dir, "chromium")
	script := "#!/bin/sh\nexec unshare " + ns + " --propagation private sh -c 'mount --bind \"$0\" /etc/chromium && exec " +
		chromium + " \"$@\"' " + etc + " \"$@\"\n"
	if err := os.WriteFile(wrap, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrap
}

// startChromium starts headless Chromium through the wrapper.
func startChromium(t *testing.T, exe string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.Headless,
		chromedp.NoSandbox, chromedp.DisableGPU)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

func navigate(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return chromedp.Do(ctx, chromedp.Navigate(url))
}

// Chromium itself reads the packaged policy: it knows every name and
// takes every value (chrome://policy), loads the allowed origin and no
// other page, and, with the policy as shipped, refuses DevTools (even over
// the remote debugging protocol that drives this test).
func TestKioskBrowserPolicyInChromium(t *testing.T) {
	shipped, _ := kioskPolicy(t)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte("<!DOCTYPE html><title>kiosk</title><p>kiosk"))
	}))
	defer srv.Close()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("<!DOCTYPE html><title>elsewhere</title>"))
	}))
	defer other.Close()

	t.Run("as shipped, DevTools refused", func(t *testing.T) {
		opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromiumWithPolicy(t, shipped)),
			chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU)
		alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		defer cancelAlloc()
		ctx, cancel := chromedp.NewContext(alloc)
		defer cancel()
		// Chromium refuses to open the tab, or to navigate it.
		err := chromedp.Do(ctx)
		if err == nil {
			err = navigate(ctx, srv.URL+"/")
		}
		if err == nil || !strings.Contains(err.Error(), "Not allowed") {
			t.Errorf("the DevTools protocol drove a browser whose policy disallows DevTools: %v", err)
		}
	})

	t.Run("every policy taken, only the kiosk's page loads", func(t *testing.T) {
		// The same policy, but DevTools allowed so that this test can drive
		// it, and chrome://policy and this test's server allowed too.
		p := map[string]any{}
		for k, v := range shipped {
			p[k] = v
		}
		p["DeveloperToolsAvailability"] = 0
		p["URLAllowlist"] = append(append([]any{}, shipped["URLAllowlist"].([]any)...), srv.URL, "chrome://policy")
		ctx := startChromium(t, chromiumWithPolicy(t, p))
		if err := navigate(ctx, "chrome://policy"); err != nil {
			t.Fatal(err)
		}
		// The page's text, shadow roots included, one text node a token.
		var tokens []string
		wait.Until(t, 20*time.Second, "chrome://policy to list the policies", func() error {
			c, cancel := context.WithTimeout(ctx, 10*time.Second)
			text, err := chromedp.Run(c, chromedp.Evaluate[[]string](`(() => {
				const out = [];
				const walk = (n) => {
					if (n.shadowRoot) walk(n.shadowRoot);
					for (const c of n.childNodes) {
						if (c.nodeType === 3) { if (c.textContent.trim()) out.push(c.textContent.trim()); } else walk(c);
					}
				};
				walk(document.body);
				return out;
			})()`))
			cancel()
			if err != nil {
				return err
			}
			tokens = text
			if indexOf(tokens, "URLBlocklist") < 0 {
				return fmt.Errorf("chrome://policy lists no URLBlocklist yet")
			}
			return nil
		})
		for name := range p {
			i := indexOf(tokens, name)
			if i < 0 || i+5 >= len(tokens) {
				t.Errorf("chrome://policy does not list %s", name)
				continue
			}
			// name, value, source, scope, level, status [, status's detail...]
			switch status := tokens[i+5]; status {
			case "OK":
			case "Deprecated":
				t.Logf("chrome://policy: %s is deprecated in this Chromium, still applied", name)
			default:
				detail := strings.Join(tokens[i+1:min(i+16, len(tokens))], " | ")
				t.Errorf("chrome://policy: %s: %s (%s)", name, status, detail)
			}
		}
		if err := navigate(ctx, srv.URL+"/ui/page?x=1"); err != nil || hits.Load() == 0 {
			t.Errorf("the allowed origin %s did not load: %v", srv.URL, err)
		}
		for _, url := range []string{other.URL + "/", "file:///etc/hostname", "file:///"} {
			if err := navigate(ctx, url); err == nil || !strings.Contains(err.Error(), "ERR_BLOCKED_BY_ADMINISTRATOR") {
				t.Errorf("%s: %v, want ERR_BLOCKED_BY_ADMINISTRATOR", url, err)
			}
		}
	})

	// Chromium's own pages (history, settings, downloads: what a keyboard
	// shortcut opens) fall under the "*" too. Page.navigate of the DevTools
	// protocol opens them regardless, so this asks the browser itself, from
	// its command line.
	t.Run("chrome:// pages blocked", func(t *testing.T) {
		// Headless --dump-dom needs DevTools itself, and loads nothing with
		// incognito forced.
		p := map[string]any{}
		for k, v := range shipped {
			p[k] = v
		}
		p["DeveloperToolsAvailability"], p["IncognitoModeAvailability"] = 0, 0
		exe := chromiumWithPolicy(t, p)
		for _, url := range []string{"chrome://version", "chrome://history"} {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			out, _ := exec.CommandContext(ctx, exe, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url).CombinedOutput()
			cancel()
			if !bytes.Contains(out, []byte("ERR_BLOCKED_BY_ADMINISTRATOR")) {
				t.Errorf("chromium --dump-dom %s was not blocked:\n%s", url, lastLines(out, 5))
			}
		}
	})
}

// lastLines returns the last n lines of out.
func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}
