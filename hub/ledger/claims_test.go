package ledger_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/ledger"
	hubpostal "github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// day is the fixture's first day: its clock starts at noon on it.
var day = time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)

// at moves the fixture's clock to t.
func (f *fixture) at(t time.Time) { f.clock.Add(t.Sub(f.clock.Now())) }

// claims lists a report's refund claims by label.
func claims(r *hubpostal.Report) []string {
	var out []string
	for _, x := range r.Voided {
		out = append(out, x.Label)
	}
	return out
}

// sentBody is the body of the report this hub recorded as accepted for
// the period ending at to.
func (f *fixture) sentBody(to time.Time) []byte {
	f.t.Helper()
	var body []byte
	if err := f.db.QueryRowContext(context.Background(), f.db.Rebind(`SELECT body FROM reports WHERE period_to = ? AND state = 'accepted' ORDER BY id LIMIT 1`),
		to.UnixMicro()).Scan(&body); err != nil {
		f.t.Fatalf("report to %s: %v", to, err)
	}
	return body
}

// report builds the report for [from, to) and, if submit, files it.
func (f *fixture) report(from, to time.Time, submit bool) *hubpostal.Report {
	f.t.Helper()
	ctx := context.Background()
	rep, err := f.l.BuildReport(ctx, from, to)
	if err != nil {
		f.t.Fatal(err)
	}
	if submit {
		if _, err := f.l.SubmitReport(ctx, rep, hubpostal.New(f.paURL, "FR", testLicence)); err != nil {
			f.t.Fatalf("report to %s: %v", to, err)
		}
	}
	return rep
}

// A refund claim goes in the report of the period the stamp was voided
// in, once: a stamp voided within its own period in that period's, one
// refunded after its period was reported in the next (it was claimed in
// none while reports went by sale time). A report built again for a period
// sent is byte for byte the one sent, later voids or not. Every way of
// voiding dates the void.
func TestVoidClaimedInThePeriodItWasVoided(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{Workers: 1, MPSDsPerWorker: 1})
		ctx := context.Background()
		f.mustSell(newSale("late", 780, "0000-0005-01"))
		f.mustSell(newSale("jam", 780, "0000-0005-02"))
		if err := f.l.RecordPrint(ctx, &protocol.PrintReport{RequestID: "jam", KioskID: "kiosk-1",
			Labels: []protocol.LabelOutcome{{LabelSerial: "0000-0005-02", Outcome: protocol.PrintFailed, Reason: "jam"}}}); err != nil {
			t.Fatal(err)
		}
		from, err := f.l.ReportedUntil(ctx)
		if err != nil {
			t.Fatal(err)
		}
		d1, d2, d3 := day.Add(24*time.Hour), day.Add(48*time.Hour), day.Add(72*time.Hour)
		f.at(d1.Add(time.Minute))
		first := f.report(from, d1, true)
		if got := claims(first); !slices.Equal(got, []string{"0000-0005-02"}) {
			t.Fatalf("day 1 claims %v, want the jammed label", got)
		}
		if len(first.Transactions) != 2 || first.Transactions[0].Reason != "" || first.Transactions[1].Reason != "jam" {
			t.Fatalf("day 1 lines %+v", first.Transactions)
		}

		// Day 2: the first stamp is handed back at the counter; its
		// period, reported, is built again as sent.
		f.at(d1.Add(9 * time.Hour))
		if _, err := f.l.RefundUnused(ctx, "kiosk-1", "late", mustLabel("0000-0005-01"), time.Time{}, "sue", "wrong class"); err != nil {
			t.Fatal(err)
		}
		again, err := json.Marshal(f.report(from, d1, false))
		if err != nil {
			t.Fatal(err)
		}
		if sent := f.sentBody(d1); !bytes.Equal(again, sent) {
			t.Fatalf("day 1 built again differs from the one sent:\n%s\n%s", again, sent)
		}
		// Other voids of day 2: a retired kiosk's unreported stamp, and a
		// label whose remedy was asked before it was reported.
		f.mustSell(newSale("retired", 780, "0000-0005-03"))
		f.mustSell(newSale("remedy", 780, "0000-0005-04"))
		if _, err := f.l.FailedLabel(ctx, "kiosk-1", "remedy", mustLabel("0000-0005-04")); err != nil {
			t.Fatal(err)
		}
		if _, err := f.l.VoidIssued(ctx, "kiosk-1", "kiosk_retired"); err != nil {
			t.Fatal(err)
		}
		f.check()
		f.at(d2.Add(time.Minute))
		second := f.report(d1, d2, true)
		if got := claims(second); !slices.Equal(got, []string{"0000-0005-01", "0000-0005-03", "0000-0005-04"}) {
			t.Fatalf("day 2 claims %v, want the refund, the retired kiosk's stamp and the remedy's", got)
		}
		if second.Totals.VoidedPostage != 3*780 || !second.Voided[0].At.Before(d1) {
			t.Fatalf("day 2 claims %+v", second.Voided)
		}
		f.at(d3.Add(time.Minute))
		if third := f.report(d2, d3, true); len(third.Voided) != 0 {
			t.Fatalf("day 3 claims %v, want none", claims(third))
		}
		// The authority took each claim once (it refuses a second).
		seen := map[string]int{}
		for _, r := range f.pa.Reports() {
			for _, c := range r.Claims {
				seen[c]++
			}
		}
		if len(seen) != 4 {
			t.Fatalf("the authority holds claims %v, want 4", seen)
		}
		for c, n := range seen {
			if n != 1 {
				t.Fatalf("claim %s made %d times", c, n)
			}
		}
		var undated int
		if err := f.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM indicia WHERE state = 'voided' AND voided_at IS NULL`).Scan(&undated); err != nil || undated != 0 {
			t.Fatalf("%d voided indicia without a void time, %v", undated, err)
		}
		f.check()
	})
}

// lostAnswer delivers a report and loses the authority's answer.
type lostAnswer struct{ pa ledger.Submitter }

func (s lostAnswer) SubmitReport(ctx context.Context, r *hubpostal.Report) (string, error) {
	if _, err := s.pa.SubmitReport(ctx, r); err != nil {
		return "", err
	}
	return "", errors.New("postal: submit report: connection reset by peer")
}

// refusing refuses every report, as the authority does one that does not
// add up.
type refusing struct{}

func (refusing) SubmitReport(context.Context, *hubpostal.Report) (string, error) {
	return "", &hubpostal.RefusedError{Status: 422, Answer: "report does not add up"}
}

// A report whose answer was lost may be the one the authority keeps under
// its id, and it answers a resubmission with that one's reference. So the
// hub sends it again as first sent, records that, and tells ops when the
// one built again differs (here a hub whose clock was behind voided a
// stamp in the period after it was built). A report the authority refused
// is not kept: the next one is sent as built.
func TestReportResentAsFirstSent(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{Workers: 1, MPSDsPerWorker: 1})
		ctx := context.Background()
		pa := hubpostal.New(f.paURL, "FR", testLicence)
		f.mustSell(newSale("r1", 780, "0000-0006-01"))
		from, err := f.l.ReportedUntil(ctx)
		if err != nil {
			t.Fatal(err)
		}
		d1 := day.Add(24 * time.Hour)

		// Refused: kept as refused, and a later one is sent as built.
		f.at(d1.Add(time.Minute))
		if _, err := f.l.SubmitReport(ctx, f.report(from, d1, false), refusing{}); err == nil {
			t.Fatal("a refused report was recorded accepted")
		}
		var state string
		if err := f.db.QueryRowContext(ctx, `SELECT state FROM reports ORDER BY id DESC LIMIT 1`).Scan(&state); err != nil || state != "refused" {
			t.Fatalf("refused report's state %q, %v", state, err)
		}

		// Delivered, the answer lost: pending, and the period unreported.
		if _, err := f.l.SubmitReport(ctx, f.report(from, d1, false), lostAnswer{pa}); err == nil {
			t.Fatal("a lost answer was taken for acceptance")
		}
		if err := f.db.QueryRowContext(ctx, `SELECT state FROM reports ORDER BY id DESC LIMIT 1`).Scan(&state); err != nil || state != "pending" {
			t.Fatalf("report with its answer lost: state %q, %v", state, err)
		}
		if until, _ := f.l.ReportedUntil(ctx); !until.Equal(from) {
			t.Fatalf("reported until %s after a lost answer", until)
		}
		var first []byte
		if err := f.db.QueryRowContext(ctx, `SELECT body FROM reports WHERE state = 'pending'`).Scan(&first); err != nil {
			t.Fatal(err)
		}

		// Nothing changed: the report built again is the same, and its
		// acceptance settles both tries.
		f.report(from, d1, true)
		if sent := f.sentBody(d1); !bytes.Equal(sent, first) {
			t.Fatalf("resent report differs:\n%s\n%s", sent, first)
		}
		var pending int
		if err := f.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM reports WHERE state = 'pending'`).Scan(&pending); err != nil || pending != 0 {
			t.Fatalf("%d tries still pending, %v", pending, err)
		}

		// The same again with a report that changed since. A hub whose
		// clock is behind voids a stamp inside the period reported: the
		// void is dated into the next period (the report floor).
		d2 := d1.Add(24 * time.Hour)
		f.at(d2.Add(-30 * time.Minute)) // its failure is reported in time
		f.mustSell(newSale("r2", 780, "0000-0006-02"))
		f.at(d2.Add(time.Minute))
		if _, err := f.l.SubmitReport(ctx, f.report(d1, d2, false), lostAnswer{pa}); err == nil {
			t.Fatal("a lost answer was taken for acceptance")
		}
		f.at(d2.Add(-time.Minute))
		if err := f.l.RecordPrint(ctx, &protocol.PrintReport{RequestID: "r2", KioskID: "kiosk-1",
			Labels: []protocol.LabelOutcome{{LabelSerial: "0000-0006-02", Outcome: protocol.PrintFailed, Reason: "jam"}}}); err != nil {
			t.Fatal(err)
		}
		f.at(d2.Add(2 * time.Minute))
		if again := f.report(d1, d2, false); len(again.Voided) != 0 {
			t.Fatalf("a void by a hub behind went into a period already built: %v", claims(again))
		}
		// A hub of a release before the floor voids it inside the period.
		if _, err := f.db.ExecContext(ctx, f.db.Rebind(`UPDATE indicia SET voided_at = ? WHERE label = ?`), d2.Add(-time.Minute).UnixMicro(), "0000-0006-02"); err != nil {
			t.Fatal(err)
		}
		rebuilt := f.report(d1, d2, false)
		if len(rebuilt.Voided) != 1 {
			t.Fatalf("rebuilt claims %v", claims(rebuilt))
		}
		ref, err := f.l.SubmitReport(ctx, rebuilt, pa)
		if err != nil {
			t.Fatal(err)
		}
		filed := f.pa.Reports()
		if last := filed[len(filed)-1]; last.Ref != ref || len(last.Claims) != 0 {
			t.Fatalf("the authority holds %+v, answered %s", last, ref)
		}
		if len(rebuilt.Voided) != 0 {
			t.Fatalf("the report sent has claims %v; the authority holds none", claims(rebuilt))
		}
		var sent hubpostal.Report
		if err := json.Unmarshal(f.sentBody(d2), &sent); err != nil || len(sent.Voided) != 0 {
			t.Fatalf("recorded as accepted: claims %v, %v", claims(&sent), err)
		}
		as, err := f.al.List(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(as, func(a alerts.Alert) bool {
			return a.Kind == alerts.ReportRefused && a.Subject == "report/"+d1.Format(time.RFC3339)+"/changed"
		})
		if i < 0 || !strings.Contains(as[i].Message, "0 refund claims") || !strings.Contains(as[i].Message, "built again 1 and 1") {
			t.Fatalf("no alert that the report changed: %+v", as)
		}
		f.check()
	})
}

// Schema v40 dates the voids a database already holds so that the reports
// it sent are built again as sent, and a stamp voided after its period was
// reported, which no report claimed, is claimed by the next one, once.
func TestVoidTimesMigrate(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{Workers: 1, MPSDsPerWorker: 1})
		ctx := context.Background()
		f.mustSell(newSale("late", 780, "0000-0007-01"))
		f.mustSell(newSale("jam", 780, "0000-0007-02"))
		if err := f.l.RecordPrint(ctx, &protocol.PrintReport{RequestID: "jam", KioskID: "kiosk-1",
			Labels: []protocol.LabelOutcome{{LabelSerial: "0000-0007-02", Outcome: protocol.PrintFailed, Reason: "jam"}}}); err != nil {
			t.Fatal(err)
		}
		from, err := f.l.ReportedUntil(ctx)
		if err != nil {
			t.Fatal(err)
		}
		d1, d2 := day.Add(24*time.Hour), day.Add(48*time.Hour)
		f.at(d1.Add(time.Minute))
		f.report(from, d1, true)
		sent := f.sentBody(d1)
		// Day 2: a refund, and a sale failed the same day; then the hub
		// goes back to schema 39, which never dated a void.
		f.at(d1.Add(9 * time.Hour))
		if _, err := f.l.RefundUnused(ctx, "kiosk-1", "late", mustLabel("0000-0007-01"), time.Time{}, "sue", "wrong class"); err != nil {
			t.Fatal(err)
		}
		f.mustSell(newSale("jam2", 780, "0000-0007-03"))
		if err := f.l.RecordPrint(ctx, &protocol.PrintReport{RequestID: "jam2", KioskID: "kiosk-1",
			Labels: []protocol.LabelOutcome{{LabelSerial: "0000-0007-03", Outcome: protocol.PrintFailed, Reason: "jam"}}}); err != nil {
			t.Fatal(err)
		}
		f.close()
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		down := []string{`DROP INDEX indicia_voided_at`, `ALTER TABLE indicia DROP COLUMN voided_at`}
		if db.Dialect == store.Postgres {
			down = append([]string{`ALTER TABLE indicia DROP CONSTRAINT indicia_voided_at_state`}, down...)
		}
		for _, q := range down {
			if _, err := db.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		// Migrate to v40 again, as the store does: the file, in one
		// transaction (the later migrations stay as they are).
		v40, err := os.ReadFile(filepath.Join("..", "store", "migrations", string(db.Dialect), "0040_voided_at.sql"))
		if err != nil {
			t.Fatal(err)
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, string(v40)); err != nil {
			t.Fatalf("schema v40 again: %v", err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		db.Close()
		f.open()

		again, err := json.Marshal(f.report(from, d1, false))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, sent) {
			t.Fatalf("day 1 built again after the migration differs from the one sent:\n%s\n%s", again, sent)
		}
		f.at(d2.Add(time.Minute))
		if got := claims(f.report(d1, d2, true)); !slices.Equal(got, []string{"0000-0007-01", "0000-0007-03"}) {
			t.Fatalf("day 2 claims %v, want the late refund and the day's jam", got)
		}
		rows, err := f.db.QueryContext(ctx, `SELECT label, created_at, voided_at FROM indicia WHERE state = 'voided' ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for rows.Next() {
			var label string
			var created, voided int64
			if err := rows.Scan(&label, &created, &voided); err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprintf("%s:%v", label, voided == created))
		}
		rows.Close()
		// The late refund takes the end of the period reported; the others
		// keep their sale time.
		if want := "0000-0007-01:false 0000-0007-02:true 0000-0007-03:true"; strings.Join(got, " ") != want {
			t.Fatalf("void times %v, want %s", got, want)
		}
		f.check()
	})
}
