package e2e

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/journal"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/wait"
)

// A print report lost between the printer and the ledger (the hub died, the
// broker died, or no hub was subscribed when the kiosk sent it) is sent
// again until the hub confirms it: the label ends printed in the ledger and
// the sale closed in the kiosk's journal, with no alert for a stamp that
// printed.
func TestPrintReportSurvivesKills(t *testing.T) {
	for _, c := range []struct {
		name      string
		mosquitto bool
		kill      string // "hub" or "broker"
	}{
		{"embedded broker, hub killed", false, "hub"},
		{"mosquitto, hub killed", true, "hub"},
		{"mosquitto, broker killed", true, "broker"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			var d *demo.Demo
			var m *mosquitto
			if c.mosquitto {
				m = newMosquitto(t, t.TempDir(), false)
				d = m.demo(demo.Config{KioskID: "rep-k1", Store: "rep-store", Sheets: 1})
			} else {
				d = startDemo(t, demo.Config{Sheets: 1})
			}
			held, release := d.Printer().HoldNext()
			defer release()
			type sold struct {
				status int
				rc     receipt
			}
			done := make(chan sold, 1)
			go func() {
				st, rc := sell(t, d, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_approve")})
				done <- sold{st, rc}
			}()
			select {
			case <-held:
			case <-time.After(30 * time.Second):
				t.Fatal("nothing reached the printer")
			}
			// The hub has signed and answered; the label is in the printer.
			if c.kill == "hub" {
				d.KillHub()
			} else {
				m.kill()
			}
			release()
			var s sold
			select {
			case s = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("the sale never ended")
			}
			if s.status != http.StatusOK || len(s.rc.Labels) != 1 || s.rc.Labels[0].Outcome != "printed" {
				t.Fatalf("sale: %d %+v", s.status, s.rc)
			}
			label := s.rc.Labels[0].LabelSerial
			if c.kill == "hub" {
				if err := d.RestartHub(ctx); err != nil {
					t.Fatal(err)
				}
			} else if err := m.start(); err != nil {
				t.Fatal(err)
			}
			hubDB := sqlOpen(t, filepath.Join(d.Dir(), "hub", "hub.db"))
			wait.For(t, 90*time.Second, "the ledger records the label printed", func() bool {
				var state string
				hubDB.QueryRow(`SELECT state FROM indicia WHERE label = ?`, label).Scan(&state)
				return state == "printed"
			})
			wait.For(t, 30*time.Second, "the kiosk closes the sale", func() bool {
				j, err := journal.Open(d.JournalPath())
				if err != nil {
					return false
				}
				defer j.Close()
				open, err := j.Unfinished(ctx)
				return err == nil && len(open) == 0
			})
			ledgerOK(t, d)
		})
	}
}
