package rates_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/rates"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
)

// The shipped table is the one the protocol vectors price with.
func TestBuiltinMatchesVectors(t *testing.T) {
	b, err := rates.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	cur, err := b.Current(time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cur, prototest.Rates) {
		t.Fatalf("builtin table\n %+v\ndiffers from prototest.Rates\n %+v", cur, prototest.Rates)
	}
}

func TestNewTableTakesOverOnItsDate(t *testing.T) {
	b, _ := rates.Builtin()
	next := prototest.Rates
	next.Version, next.Effective = "usps-2027-01-17", "2027-01-17"
	next.Classes = append([]protocol.RateClass(nil), next.Classes...)
	next.Classes[0].FirstOunce = 800
	if err := b.Add(next); err != nil {
		t.Fatal(err)
	}
	before, _ := b.Current(time.Date(2027, 1, 16, 23, 59, 0, 0, time.UTC))
	after, _ := b.Current(time.Date(2027, 1, 17, 0, 0, 0, 0, time.UTC))
	if before.Version != "usps-2025-07-13" || after.Version != "usps-2027-01-17" {
		t.Fatalf("before %s, after %s", before.Version, after.Version)
	}
	if _, err := b.Current(time.Date(2025, 7, 12, 0, 0, 0, 0, time.UTC)); err == nil {
		t.Fatal("a date before every table has a table")
	}
}

// Reload picks up a new file; an edited version already loaded, or a file
// that does not parse, leaves the book as it was.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	b, err := rates.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	next := prototest.Rates
	next.Version, next.Effective = "usps-2027-01-17", "2027-01-17"
	write := func(name string, v any) {
		data, _ := json.Marshal(v)
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("next.json", next)
	if err := b.Reload(dir); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)
	if cur, _ := b.Current(at); cur.Version != next.Version {
		t.Fatalf("after reload %s is in force", cur.Version)
	}
	edited := next
	edited.Classes = append([]protocol.RateClass(nil), next.Classes...)
	edited.Classes[0].FirstOunce = 1
	write("next.json", edited)
	if err := b.Reload(dir); err == nil {
		t.Fatal("an edited version reloaded")
	}
	os.WriteFile(filepath.Join(dir, "next.json"), []byte("{"), 0o644)
	if err := b.Reload(dir); err == nil {
		t.Fatal("a broken file reloaded")
	}
	if cur, _ := b.Current(at); !reflect.DeepEqual(cur, next) {
		t.Fatalf("a failed reload changed the table in force: %+v", cur)
	}
}
