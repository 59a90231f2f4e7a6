package rates_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/rates"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// A table in one hub's rates directory reaches every hub of the cluster
// through the database, and stays when a hub reloads its own directory; a
// version published twice with other prices is an error, and the hub with
// the second prices by the first, as the others do.
func TestTablesSharedAcrossHubs(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
		next := nextTable(900)
		dirA := dirWith(t, next)
		a, err := rates.LoadDir(dirA)
		if err != nil {
			t.Fatal(err)
		}
		dirB := t.TempDir()
		b, err := rates.LoadDir(dirB)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Share(ctx, db, "hub-a", now); err != nil {
			t.Fatal(err)
		}
		if err := b.Share(ctx, db, "hub-b", now); err != nil {
			t.Fatal(err)
		}
		at := time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)
		if cur, _ := b.Current(at); cur.Version != next.Version || cur.Classes[0].FirstOunce != 900 {
			t.Fatalf("hub b prices with %s after sharing", cur.Version)
		}
		if err := b.Reload(dirB); err != nil {
			t.Fatal(err)
		}
		if cur, _ := b.Current(at); cur.Version != next.Version {
			t.Fatalf("hub b's reload of its own directory dropped the cluster's table: %s", cur.Version)
		}
		// Hub c has the same version with other prices and another date:
		// it is told, and prices by the cluster's, as it goes on doing
		// after reloading its directory, which still takes a new table
		// dropped there.
		mine := nextTable(1)
		mine.Effective = "2027-01-10"
		between := nextTable(500)
		between.Version, between.Effective = "usps-2027-01-12", "2027-01-12"
		dirC := dirWith(t, mine, between)
		c, err := rates.LoadDir(dirC)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Share(ctx, db, "hub-c", now); err == nil {
			t.Fatal("a version with other prices was shared")
		}
		if cur, _ := c.Current(at); cur.Version != next.Version || cur.Classes[0].FirstOunce != 900 {
			t.Fatalf("hub c prices by %s at %d, not the cluster's %s", cur.Version, cur.Classes[0].FirstOunce, next.Version)
		}
		later := nextTable(1000)
		later.Version, later.Effective = "usps-2027-07-01", "2027-07-01"
		data, _ := json.Marshal(later)
		if err := os.WriteFile(filepath.Join(dirC, later.Version+".json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := c.Reload(dirC); err != nil {
			t.Fatalf("hub c's reload after the conflict: %v", err)
		}
		for _, day := range []time.Time{at, time.Date(2027, 3, 15, 0, 0, 0, 0, time.UTC)} {
			if cur, _ := c.Current(day); cur.Version != next.Version || cur.Classes[0].FirstOunce != 900 {
				t.Fatalf("hub c on %s prices by %s at %d, want the cluster's %s at 900", day.Format(time.DateOnly), cur.Version, cur.Classes[0].FirstOunce, next.Version)
			}
		}
		if cur, _ := c.Current(time.Date(2027, 8, 1, 0, 0, 0, 0, time.UTC)); cur.Version != later.Version {
			t.Fatalf("hub c's new table not loaded after the conflict: %s", cur.Version)
		}
		if err := a.Share(ctx, db, "hub-a", now); err != nil {
			t.Fatalf("hub a: %v", err)
		}
		if cur, _ := a.Current(at); cur.Classes[0].FirstOunce != 900 {
			t.Fatalf("hub a took hub c's prices: %d", cur.Classes[0].FirstOunce)
		}
	})
}

func nextTable(firstOunce protocol.Mills) protocol.RateTable {
	b, _ := rates.Builtin()
	t, _ := b.Current(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	t.Version, t.Effective = "usps-2027-01-17", "2027-01-17"
	t.Classes = append([]protocol.RateClass(nil), t.Classes...)
	t.Classes[0].FirstOunce = firstOunce
	return t
}

func dirWith(t *testing.T, tables ...protocol.RateTable) string {
	t.Helper()
	dir := t.TempDir()
	for _, tb := range tables {
		data, _ := json.Marshal(tb)
		if err := os.WriteFile(filepath.Join(dir, tb.Version+".json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
