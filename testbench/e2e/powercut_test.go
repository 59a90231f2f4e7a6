package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/journal"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/wait"
)

// The kiosk loses power (SIGKILL, from inside, at a chosen step) in the
// middle of a two-stamp sale; restarted, it settles the sale. Every label
// then ends as exactly one of printed-and-confirmed or voided-and-refunded,
// the customer has paid exactly for the stamps that printed, no label came
// out of the printer twice, and the hub's ledger adds up.
func TestKioskPowerCut(t *testing.T) {
	for _, step := range []string{"begun", "answered", "printing", "printed", "printing:2", "printed:2", "reported"} {
		t.Run(step, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			d, err := demo.Start(ctx, demo.Config{BinDir: binDir, Dir: dir, Sheets: 1, Output: output(t),
				KioskEnv: []string{"FRANK_KIOSK_CRASH_AT=" + step}, KioskBinary: "kiosk-crashtest"})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			// The hub's confirmation of the print report comes after the
			// customer has the receipt: a kiosk dying there has answered.
			if status, body, err := d.Sell(ctx, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "quantity": 2,
				"payment": map[string]string{"method": "card_token", "token": "tok_approve"}}); err == nil && step != "reported" {
				t.Fatalf("the kiosk answered although it should have died at %s: %d %s", step, status, body)
			}
			select {
			case <-d.KioskExited():
			case <-time.After(10 * time.Second):
				t.Fatal("the kiosk did not die")
			}
			printedBefore := len(d.Printer().Labels())
			if err := d.RestartKiosk(ctx); err != nil {
				t.Fatal(err)
			}
			// Wait for the restart to settle the journal.
			var sale *journal.Sale
			wait.Until(t, 30*time.Second, "the restarted kiosk to finish the journal's sales", func() error {
				j, err := journal.Open(d.JournalPath())
				if err != nil {
					t.Fatal(err)
				}
				defer j.Close()
				open, err := j.Unfinished(ctx)
				if err != nil || len(open) > 0 {
					return fmt.Errorf("unfinished %+v, %v", open, err)
				}
				rows, _ := sqlOpen(t, d.JournalPath()).Query(`SELECT request_id FROM sales`)
				var id string
				for rows.Next() {
					rows.Scan(&id)
				}
				rows.Close()
				if sale, err = j.Get(ctx, id); err != nil {
					t.Fatal(err)
				}
				return nil
			})
			// The restarted kiosk still knows its stock: the sheet's other 8 labels.
			resp, err := http.Get(d.KioskURL() + "/api/v1/stock")
			if err != nil {
				t.Fatal(err)
			}
			var stock struct {
				LabelsLeft int `json:"labels_left"`
			}
			json.NewDecoder(resp.Body).Decode(&stock)
			resp.Body.Close()
			if stock.LabelsLeft != 8 {
				t.Fatalf("after restart the kiosk has %d labels, want 8", stock.LabelsLeft)
			}
			if len(d.Printer().Labels()) != printedBefore {
				t.Fatalf("the restart printed %d more labels", len(d.Printer().Labels())-printedBefore)
			}
			// Each label: printed and confirmed, or refunded; and the hub agrees.
			hubDB := sqlOpen(t, filepath.Join(dir, "hub", "hub.db"))
			var printedPostage int64
			for _, l := range sale.Labels {
				var state string
				var postage int64
				if err := hubDB.QueryRow(`SELECT state, postage FROM indicia WHERE label = ?`, l.Serial).Scan(&state, &postage); err != nil {
					t.Fatalf("label %s: %v", l.Serial, err)
				}
				switch {
				case l.State == journal.Printed && state == "printed":
					printedPostage += postage
				case l.State == journal.Refunded && state == "voided":
				default:
					t.Fatalf("label %s: kiosk says %s, hub says %s", l.Serial, l.State, state)
				}
			}
			tot := d.Cards().Totals()
			if tot.Captured-tot.Refunded != printedPostage || tot.Open != 0 {
				t.Fatalf("paid %d - refunded %d, printed postage %d, open %d", tot.Captured, tot.Refunded, printedPostage, tot.Open)
			}
			if out, err := d.Hub("ledger", "check"); err != nil || !strings.Contains(out, "ledger ok") {
				t.Fatalf("ledger check: %v %s", err, out)
			}
			t.Logf("%s: labels %v; paid %d, refunded %d", step, states(sale), tot.Captured, tot.Refunded)
		})
	}
}

func states(s *journal.Sale) string {
	var b []string
	for _, l := range s.Labels {
		b = append(b, fmt.Sprintf("%s=%s", l.Serial, l.State))
	}
	return strings.Join(b, " ")
}

func sqlOpen(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// The power-cut hook is only in the test build: the kiosk as shipped
// ignores FRANK_KIOSK_CRASH_AT and sells, and has no code to kill itself.
func TestShippedKioskHasNoCrashHook(t *testing.T) {
	for _, b := range []struct {
		name string
		hook bool
	}{{"kiosk", false}, {"kiosk-crashtest", true}} {
		bin, err := os.ReadFile(filepath.Join(binDir, b.name))
		if err != nil {
			t.Fatal(err)
		}
		if has := bytes.Contains(bin, []byte("crashing on purpose")); has != b.hook {
			t.Fatalf("%s has the crash hook: %v, want %v", b.name, has, b.hook)
		}
	}
	d := startDemo(t, demo.Config{Sheets: 1, KioskEnv: []string{"FRANK_KIOSK_CRASH_AT=begun"}})
	if status, rc := sell(t, d, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_approve")}); status != http.StatusOK || rc.Status != "ok" {
		t.Fatalf("sale: %d %+v", status, rc)
	}
	select {
	case <-d.KioskExited():
		t.Fatal("the shipped kiosk died at the test hook's step")
	default:
	}
}
