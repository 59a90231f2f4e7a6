package browser

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Accessibility checks with axe-core, the engine behind most automated
// WCAG audits. axe-core comes from npm, pinned in axe/package-lock.json and
// installed by .ci/deps (`npm ci` in testbench/browser/axe); a test that
// needs it and cannot find it fails and says so, it never skips.

// AxeEnv names an environment variable that, when set, is the path of the
// axe.min.js to inject instead of the npm install under the module root.
const AxeEnv = "FRANK_AXE_JS"

// AxeTags are the rule sets checked: WCAG 2.0, 2.1 and 2.2, levels A and AA.
var AxeTags = []string{"wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"}

// axeFile is where npm ci puts axe-core, from the module root.
const axeFile = "testbench/browser/axe/node_modules/axe-core/axe.min.js"

// Violation is one axe-core rule the page breaks, with the elements that
// break it.
type Violation struct {
	ID      string `json:"id"`     // the rule, e.g. color-contrast
	Impact  string `json:"impact"` // minor, moderate, serious or critical
	Help    string `json:"help"`
	HelpURL string `json:"helpUrl"`
	Nodes   []struct {
		// Target is a CSS selector path per element; one inside an iframe
		// or shadow root is a list of selectors, outermost first.
		Target         []json.RawMessage `json:"target"`
		HTML           string            `json:"html"`
		FailureSummary string            `json:"failureSummary"`
	} `json:"nodes"`
}

// Targets are the selectors of the elements that break the rule, one per
// element (a nested one's selectors joined by " >> ").
func (v Violation) Targets() []string {
	var out []string
	for _, n := range v.Nodes {
		var parts []string
		for _, raw := range n.Target {
			var s string
			if json.Unmarshal(raw, &s) == nil {
				parts = append(parts, s)
				continue
			}
			var nested []string
			if json.Unmarshal(raw, &nested) == nil {
				parts = append(parts, strings.Join(nested, " >> "))
				continue
			}
			parts = append(parts, string(raw))
		}
		out = append(out, strings.Join(parts, " >> "))
	}
	return out
}

// String is one line: rule, impact, help and the elements.
func (v Violation) String() string {
	return fmt.Sprintf("%s (%s): %s [%s] %s", v.ID, v.Impact, v.Help, strings.Join(v.Targets(), ", "), v.HelpURL)
}

var axeSource = sync.OnceValues(loadAxe)

// AxePath is the axe.min.js the checks inject: $FRANK_AXE_JS, or the npm
// install under the module root, found by walking up from the working
// directory (a test's package directory) to go.mod.
func AxePath() (string, error) {
	if p := os.Getenv(AxeEnv); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("axe: working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, filepath.FromSlash(axeFile)), nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", fmt.Errorf("axe: no go.mod above the working directory, so no module root (set %s to axe.min.js)", AxeEnv)
		}
		dir = up
	}
}

func loadAxe() (string, error) {
	path, err := AxePath()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && os.Getenv(AxeEnv) != "" {
		return "", fmt.Errorf("axe-core: %s names a missing file (%w): unset it to use testbench/browser/axe, installed by `bash .ci/deps`", AxeEnv, err)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("axe-core not installed (%w): run `bash .ci/deps` (make test does; it runs npm ci in testbench/browser/axe), or set %s", err, AxeEnv)
	}
	if err != nil {
		return "", fmt.Errorf("axe: read %s: %w", path, err)
	}
	return string(b), nil
}

// NeedAxe fails the test at once when axe-core is not installed, naming the
// fix, so that a test can check before it starts a system up.
func NeedAxe(t testing.TB) {
	t.Helper()
	if _, err := axeSource(); err != nil {
		t.Fatal(err)
	}
}

// Axe runs axe-core on the page as it is now, with the WCAG 2.0/2.1/2.2 A
// and AA rules (AxeTags), saves its whole result as name.axe.json beside
// the screenshots, and returns the serious and critical violations. It
// injects axe-core into the document once; a page that navigates gets it
// again. It fails the test when axe-core is not installed or cannot run.
func (p *Page) Axe(name string) []Violation {
	p.t.Helper()
	src, err := axeSource()
	if err != nil {
		p.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(p.ctx, 60*time.Second)
	defer cancel()
	has, err := chromedp.Run(ctx, chromedp.Evaluate[string](`typeof window.axe === "object" ? "yes" : ""`))
	if err != nil {
		p.t.Fatalf("axe %s: %v", name, err)
	}
	if has != "yes" {
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[string](src+"\n;\"injected\"")); err != nil {
			p.t.Fatalf("axe %s: inject axe-core: %v", name, err)
		}
	}
	tags, _ := json.Marshal(AxeTags)
	js := fmt.Sprintf(`axe.run(document, {runOnly: {type: "tag", values: %s}}).then(r => JSON.stringify(r, null, 1))`, tags)
	out, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	if err != nil {
		p.t.Fatalf("axe %s: run: %v", name, err)
	}
	path := filepath.Join(p.dir, name+".axe.json")
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		p.t.Fatalf("axe %s: %v", name, err)
	}
	var res struct {
		Violations []Violation `json:"violations"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		p.t.Fatalf("axe %s: result: %v", name, err)
	}
	var bad []Violation
	for _, v := range res.Violations {
		if v.Impact == "serious" || v.Impact == "critical" {
			bad = append(bad, v)
		}
	}
	return bad
}

// Accessible runs Axe and fails the test (without stopping it, so one run
// reports every page) for each serious or critical violation: rule id,
// impact, help and the elements' selectors. It saves a screenshot as
// name.png beside the result when there are any, and reports whether
// there were none.
func (p *Page) Accessible(name string) bool {
	p.t.Helper()
	bad := p.Axe(name)
	if len(bad) == 0 {
		return true
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d serious or critical accessibility violations (axe-core, WCAG 2.2 AA; %s):", name, len(bad), filepath.Join(p.dir, name+".axe.json"))
	for _, v := range bad {
		b.WriteString("\n  " + v.String())
	}
	p.t.Error(b.String())
	p.Shot(name)
	return false
}
