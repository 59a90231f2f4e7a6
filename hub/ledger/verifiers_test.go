package ledger_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/ledger"
	hubpostal "github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/protocol"
)

// The void list read page by page is the list read whole, in one order:
// voided indicia, then spoiled ones, each once, live stamps never, and
// the last page says so. A limit out of range or a cursor the ledger
// never gave is an invalid request.
func TestVoidPagesHoldTheWholeList(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{Workers: 1, MPSDsPerWorker: 1})
		ctx := context.Background()
		if _, err := fleet.New(f.db).Add(ctx, "kiosk-2", "store-2"); err != nil {
			t.Fatal(err)
		}
		// kiosk-1's stamps are voided, kiosk-2's sold between them stay live.
		for i := range 4 {
			f.mustSell(newSale(fmt.Sprint("v", i), 780, fmt.Sprintf("1966-F8C%X-01", i), fmt.Sprintf("1966-F8C%X-02", i)))
			live := newSale(fmt.Sprint("l", i), 780, fmt.Sprintf("2222-000%X-01", i))
			live.KioskID = "kiosk-2"
			f.mustSell(live)
		}
		if _, err := f.l.VoidIssued(ctx, "kiosk-1", "kiosk_retired"); err != nil {
			t.Fatal(err)
		}
		for i := range 3 { // as a sale that failed after signing leaves them
			if _, err := f.db.ExecContext(ctx, f.db.Rebind(`INSERT INTO spoiled (kiosk_id, request_id, mpsd, label, rate_class, postage, ar, dr, cert_serial, data, reason, created_at)
				VALUES ('kiosk-1', ?, ?, ?, '1100', 780, ?, 0, 1, ?, 'label_used', 0)`),
				fmt.Sprint("s", i), ledger.FirstMPSDSerial, fmt.Sprintf("3333-0000-0%d", i+1), 100_000+i, []byte{1}); err != nil {
				t.Fatal(err)
			}
		}
		whole, err := f.l.VoidList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(whole) != 8+3 {
			t.Fatalf("the whole list has %d entries, want 11: %+v", len(whole), whole)
		}
		for _, limit := range []int{1, 3, 8, 11, 12, ledger.VoidPageMax} {
			var paged []ledger.Void
			after, pages := "", 0
			for {
				page, next, err := f.l.VoidPage(ctx, after, limit)
				if err != nil {
					t.Fatalf("limit %d, after %q: %v", limit, after, err)
				}
				if pages++; len(page) > limit || (next != "" && len(page) != limit) || pages > 20 {
					t.Fatalf("limit %d: page %d has %d entries, next %q", limit, pages, len(page), next)
				}
				paged = append(paged, page...)
				if next == "" {
					break
				}
				after = next
			}
			if want := (len(whole) + limit - 1) / limit; pages != want {
				t.Errorf("limit %d: %d pages, want %d", limit, pages, want)
			}
			if len(paged) != len(whole) {
				t.Fatalf("limit %d: %d entries in pages, %d whole", limit, len(paged), len(whole))
			}
			seen := map[ledger.Void]bool{}
			for i, v := range paged {
				if spoiled := i >= 8; spoiled != strings.HasPrefix(v.Reason, "spoiled: ") || seen[v] || strings.HasPrefix(v.Label, "2222-") {
					t.Fatalf("limit %d: entry %d is %+v", limit, i, v)
				}
				seen[v] = true
			}
			for _, v := range whole {
				if !seen[v] {
					t.Errorf("limit %d: %+v is not in any page", limit, v)
				}
			}
		}
		for _, bad := range []struct {
			after string
			limit int
		}{{"", 0}, {"", ledger.VoidPageMax + 1}, {"x1", 5}, {"i", 5}, {"i-1", 5}, {"i01", 5}, {"s1 ", 5}, {"7", 5}} {
			if _, _, err := f.l.VoidPage(ctx, bad.after, bad.limit); !isCode(err, protocol.CodeInvalidRequest) {
				t.Errorf("after %q, limit %d: %v, want %s", bad.after, bad.limit, err, protocol.CodeInvalidRequest)
			}
		}
	})
}

// A compromise's report names the day its stamps are void from as
// verifiers count it: the date at UTC-12. A key compromised at 04:30 UTC
// on 2026-12-07 is void from 2026-12-06, when a hub at UTC-5 still dates
// its stamps.
func TestReportNamesCompromiseDayWestOfUTC(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{})
		ctx := context.Background()
		compromised := time.Date(2026, 12, 7, 4, 30, 0, 0, time.UTC)
		noted := compromised.Add(2 * time.Hour)
		if _, err := f.db.ExecContext(ctx, f.db.Rebind(`INSERT INTO signing_keys (cert_serial, key_label, public_key_pem, created_at, compromised_at, compromise_noted_at)
			VALUES (7, 'key-7', '', ?, ?, ?)`), compromised.Add(-90*24*time.Hour).UnixMicro(), compromised.UnixMicro(), noted.UnixMicro()); err != nil {
			t.Fatal(err)
		}
		f.at(noted.Add(2 * time.Hour)) // the period has ended
		rep, err := f.l.BuildReport(ctx, noted.Add(-time.Hour), noted.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		var found []string
		for _, ev := range rep.Events {
			if ev.Kind == hubpostal.EventKeyCompromised && ev.Subject == "key/7" {
				found = append(found, ev.Detail)
			}
		}
		if len(found) != 1 || !strings.Contains(found[0], "dated 2026-12-06 or later are void") {
			t.Fatalf("compromise events: %q", found)
		}
	})
}
