package hub_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/rates"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
)

// A rate table dropped into another hub's rates directory reaches this
// hub through the database: on its day this hub's kiosks are sent it and
// sell at its prices. A hub whose directory holds that version with other
// prices does not start.
func TestRateTableFromAnotherHub(t *testing.T) {
	t.Parallel()
	dsn := peersDB(t)
	e := newEnvWith(t, func(c *hub.Config) { c.DB = dsn })
	ctx := context.Background()
	day := time.Now().UTC().AddDate(0, 0, 10).Truncate(24 * time.Hour)
	next := prototest.Rates
	next.Version, next.Effective = "usps-next", day.Format(time.DateOnly)
	next.Classes = append([]protocol.RateClass(nil), next.Classes...)
	next.Classes[0].FirstOunce = 900
	other, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	book, err := rates.LoadDir(tableDir(t, next))
	if err != nil {
		t.Fatal(err)
	}
	if err := book.Share(ctx, other, "hub-other", time.Now()); err != nil {
		t.Fatal(err)
	}
	e.h.Tick(ctx) // hears of it; the old table stays in force until the day
	k := e.kiosk("kiosk-1")
	configs := k.configsOf(t)
	k.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicStatus), 1, true, protocol.StatusOnline).Wait()
	waitConfig(t, configs, "rate table usps-2025-07-13", func(c protocol.KioskConfig) bool { return c.Rates.Version == "usps-2025-07-13" })
	e.clock.Set(day.Add(time.Second))
	e.h.Tick(ctx)
	waitConfig(t, configs, "rate table usps-next", func(c protocol.KioskConfig) bool { return c.Rates.Version == "usps-next" })
	res := decode(t, k.ask(purchase("after-new", "kiosk-1", "1966-F8CF-02", func(r *protocol.PurchaseRequest) {
		r.RateTable, r.Items[0].AmountMills = "usps-next", 900
	})))
	if res.Status != protocol.ResultOK || res.Indicia[0].AmountMills != 900 {
		t.Fatalf("the other hub's prices: %+v", res)
	}

	differs := next
	differs.Classes = append([]protocol.RateClass(nil), next.Classes...)
	differs.Classes[0].FirstOunce = 1
	cfg := e.cfg
	cfg.DataDir, cfg.RatesDir = t.TempDir(), tableDir(t, differs)
	// The same HSM: the soft key store, shared.
	if err := os.Symlink(filepath.Join(e.cfg.DataDir, "keys"), filepath.Join(cfg.DataDir, "keys")); err != nil {
		t.Fatal(err)
	}
	if h, err := hub.Open(ctx, cfg, quietLog()); err == nil || !strings.Contains(err.Error(), "usps-next differs") {
		if h != nil {
			h.Close()
		}
		t.Fatalf("a hub with other prices for usps-next: %v", err)
	}
}

func tableDir(t *testing.T, tables ...protocol.RateTable) string {
	t.Helper()
	dir := t.TempDir()
	for _, tb := range tables {
		b, _ := json.Marshal(tb)
		if err := os.WriteFile(filepath.Join(dir, tb.Version+".json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
