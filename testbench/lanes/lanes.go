// Package lanes states which of Frank's packages may import which, and
// checks a module's import graph against those rules: the kiosk never
// imports the hub, protocol imports nothing of ours, production code never
// imports the testbench, and the HSM knows nothing of ledgers.
package lanes

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strings"
)

// Module is Frank's module path.
const Module = "github.com/frank-postage/frank"

// Rule forbids packages under From to depend, directly or through others,
// on packages under To. Paths are relative to the module; a path covers
// itself and everything below it. Except lists packages under From the
// rule does not cover.
type Rule struct {
	From, To []string
	Except   []string
	Why      string
}

// Rules are Frank's lanes.
var Rules = []Rule{
	{From: []string{"appliance"}, To: []string{"hub"},
		Why: "the kiosk talks to the hub only through protocol"},
	{From: []string{"hub"}, To: []string{"appliance"},
		Why: "the hub talks to kiosks only through protocol"},
	{From: []string{"protocol"}, To: []string{"appliance", "hub", "hsm", "testbench", "images"},
		Why: "protocol is the contract both sides import; it imports nothing of ours"},
	{From: []string{"appliance", "hub", "protocol", "hsm", "images"}, To: []string{"testbench"},
		Except: []string{"hsm/hsmtest", "protocol/prototest"},
		Why:    "production code never carries the testbench"},
	{From: []string{"hsm"}, To: []string{"hub", "appliance"},
		Why: "the HSM signs what it is given and knows nothing of ledgers or kiosks"},
}

// Package is one package and everything it imports, directly or not, by
// path relative to the module (other modules' packages are left out).
type Package struct {
	Path string
	Deps []string
}

// Violation is one package that depends on what a rule forbids.
type Violation struct {
	Package, Dep string
	Rule         Rule
}

func (v Violation) String() string {
	return fmt.Sprintf("%s depends on %s: %s", v.Package, v.Dep, v.Rule.Why)
}

func under(path string, roots []string) bool {
	for _, r := range roots {
		if path == r || strings.HasPrefix(path, r+"/") {
			return true
		}
	}
	return false
}

// Check returns every violation of rules in pkgs, sorted.
func Check(pkgs []Package, rules []Rule) []Violation {
	var out []Violation
	for _, p := range pkgs {
		for _, r := range rules {
			if !under(p.Path, r.From) || under(p.Path, r.Except) {
				continue
			}
			for _, d := range p.Deps {
				if under(d, r.To) {
					out = append(out, Violation{Package: p.Path, Dep: d, Rule: r})
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// List reads the production import graph (tests' imports left out) of
// every package in the module rooted at dir, with go list.
func List(dir string) ([]Package, error) {
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Deps,Error", "./...")
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("lanes: go list in %s: %w: %s", dir, err, stderr.Bytes())
	}
	var pkgs []Package
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath string
			Deps       []string
			Error      *struct{ Err string }
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("lanes: reading go list: %w", err)
		}
		if p.Error != nil {
			return nil, fmt.Errorf("lanes: %s: %s", p.ImportPath, p.Error.Err)
		}
		pkg := Package{Path: relative(p.ImportPath)}
		for _, d := range p.Deps {
			if r := relative(d); r != d {
				pkg.Deps = append(pkg.Deps, r)
			}
		}
		pkgs = append(pkgs, pkg)
	}
	return pkgs, nil
}

func relative(path string) string {
	if path == Module {
		return "."
	}
	if r, ok := strings.CutPrefix(path, Module+"/"); ok {
		return r
	}
	return path
}
