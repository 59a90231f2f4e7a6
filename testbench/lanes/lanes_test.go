package lanes_test

import (
	"sort"
	"strings"
	"testing"

	"github.com/frank-postage/frank/testbench/lanes"
)

// Frank's own packages keep to their lanes.
func TestFrankKeepsItsLanes(t *testing.T) {
	pkgs, err := lanes.List("../..")
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 40 {
		t.Fatalf("go list found %d packages: it did not read the module", len(pkgs))
	}
	for _, v := range lanes.Check(pkgs, lanes.Rules) {
		t.Error(v)
	}
}

// A module that breaks every lane, in testdata/violation, is caught on
// each, also where the forbidden import is indirect.
func TestViolationsCaught(t *testing.T) {
	pkgs, err := lanes.List("testdata/violation")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range lanes.Check(pkgs, lanes.Rules) {
		got = append(got, v.Package+" -> "+v.Dep)
	}
	sort.Strings(got)
	want := []string{
		"appliance/kiosk -> hub/ledger",      // the kiosk imports the hub
		"appliance/kiosk -> testbench/cards", // and through it the testbench
		"hsm -> hub/ledger",                  // the HSM imports a ledger
		"hsm -> testbench/cards",
		"hub/ledger -> testbench/cards", // production imports the testbench
		"protocol -> hsm",               // protocol imports ours
		"protocol -> hub/ledger",
		"protocol -> testbench/cards",
		"protocol -> testbench/cards", // and breaks two rules in doing so
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("violations found:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
