package rates_test

import (
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
