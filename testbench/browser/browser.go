// Package browser drives headless Chromium (Debian package chromium)
// through chromedp for the end-to-end tests of the kiosk's touchscreen and
// the hub's web pages, and checks their accessibility with axe-core (axe.go).
// Elements are found by their data-test attribute.
package browser

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/frank-postage/frank/testbench/wait"
)

// Path finds Chromium, or fails the test naming the package. Under -short
// (the race pass: unit and in-process tests only) it skips the test, which
// the full pass runs.
func Path(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("Chromium runs in the full pass, not under -short")
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	t.Fatal("chromium not found: install the Debian package chromium (make test does, as root)")
	return ""
}

// Page is one tab.
type Page struct {
	t   testing.TB
	ctx context.Context
	dir string // screenshots
}

// Option changes how the browser starts.
type Option = chromedp.ExecAllocatorOption

// TrustKey has the browser accept a server whose certificate chain holds
// the key with this fingerprint (protocol.Fingerprint: the SHA-256 of the
// SubjectPublicKeyInfo, hex), as a kiosk pins the hub, with no web PKI.
func TrustKey(fingerprint string) Option {
	b, _ := hex.DecodeString(fingerprint)
	return chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(b))
}

// Open starts a browser with one tab at url and the given viewport; it is
// closed with the test. Screenshots go to $FRANK_UI_ARTIFACTS or a
// frank-ui-screens directory under the system temp dir.
func Open(t testing.TB, url string, w, h int64, options ...Option) *Page {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(Path(t)), chromedp.Headless,
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(int(w), int(h)))
	opts = append(opts, options...)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // opens the tab; no timeout, or it closes with it
		t.Fatalf("start chromium: %v", err)
	}
	p := &Page{t: t, ctx: ctx, dir: ArtifactsDir(t)}
	p.Do("open "+url, chromedp.EmulateViewport(w, h), chromedp.Navigate(url))
	return p
}

// ArtifactsDir is where tests keep what a person may want to look at
// afterwards (screenshots, axe results, printed receipts):
// $FRANK_UI_ARTIFACTS (make test sets bin/artifacts), or frank-ui-screens
// under the system temp dir.
func ArtifactsDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("FRANK_UI_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "frank-ui-screens")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Attach wraps a tab a test opened itself (a chromedp context), so the
// page helpers, Axe among them, work on it; screenshots go to dir.
func Attach(t testing.TB, ctx context.Context, dir string) *Page {
	return &Page{t: t, ctx: ctx, dir: dir}
}

// Sel selects by data-test.
func Sel(test string) chromedp.CSS { return chromedp.CSS(`[data-test="` + test + `"]`) }

// Do runs actions, failing the test after 20 s.
func (p *Page) Do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

// tapTarget finds an element that a finger could tap now: present, enabled,
// laid out and not covered at its centre. It answers [x, y], or [] if not.
const tapTarget = `(() => {
	const e = document.querySelector(%q);
	if (!e || e.disabled) return [];
	e.scrollIntoView({block: "nearest", inline: "nearest"});
	const r = e.getBoundingClientRect();
	if (r.width === 0 || r.height === 0) return [];
	const x = r.left + r.width / 2, y = r.top + r.height / 2;
	const top = document.elementFromPoint(x, y);
	if (!top || !(top === e || e.contains(top))) return [];
	return [x, y];
})()`

// Tap waits until an element can be tapped, then taps it with a mouse click
// at its centre. It finds the element with a script, not chromedp's DOM
// queries: those track node IDs through DOM events, and now and then wait
// out their deadline on an element that is plainly there (chromedp issues
// 258 and 682), which failed TestTouchscreen in CI with Pay showing enabled.
func (p *Page) Tap(test string) {
	p.t.Helper()
	js := fmt.Sprintf(tapTarget, string(Sel(test)))
	var at []float64
	wait.Until(p.t, 20*time.Second, "tap "+test, func() error {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		defer cancel()
		var err error
		if at, err = chromedp.Run(ctx, chromedp.Evaluate[[]float64](js)); err == nil && len(at) != 2 {
			err = fmt.Errorf("it is missing, disabled, hidden or covered")
		}
		return err
	})
	p.Do("tap "+test, chromedp.MouseClickXY(at[0], at[1]))
}

// Screen waits for a screen to show (by script, as Tap finds its element).
func (p *Page) Screen(name string, within time.Duration) {
	p.t.Helper()
	js := fmt.Sprintf(`(e => !!e && e.getClientRects().length > 0 && getComputedStyle(e).visibility !== "hidden")(document.querySelector(%q))`,
		string(Sel("screen-"+name)))
	wait.Until(p.t, within, "screen "+name+" to show", func() error {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		defer cancel()
		shown, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		if err == nil && !shown {
			err = fmt.Errorf("it is not shown")
		}
		return err
	})
}

// Text waits until the element's text contains want, and returns it.
func (p *Page) Text(test, want string, within time.Duration) string {
	p.t.Helper()
	js := fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, string(Sel(test)))
	var got string
	wait.Until(p.t, within, fmt.Sprintf("%s to show %q", test, want), func() error {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		defer cancel()
		var err error
		if got, err = chromedp.Run(ctx, chromedp.Evaluate[string](js)); err == nil && !strings.Contains(got, want) {
			err = fmt.Errorf("it shows %q", got)
		}
		return err
	})
	return got
}

// Eval evaluates JavaScript in the page.
func (p *Page) Eval(js string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
	if err != nil {
		p.t.Fatalf("eval: %v", err)
	}
	return v
}

// Type types text into an element, then Enter.
func (p *Page) Type(test, text string) {
	p.t.Helper()
	p.Do("type into "+test, chromedp.WaitVisible(Sel(test)), chromedp.SendKeys(Sel(test), text+"\r"))
}

// Shot saves a screenshot as name.png.
func (p *Page) Shot(name string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(p.dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot %s", path)
}
