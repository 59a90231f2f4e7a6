package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/ledger"
	hubpostal "github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/testbench/wait"
)

// On PostgreSQL a report's build waits for every writer that read the old
// report floor, so a row such a writer dates inside the period, committed
// while the build waits, is in the report: not built around and missed.
func TestReportWaitsForWritersOfTheOldFloor(t *testing.T) {
	t.Parallel()
	f := newFixture(t, backends[1].dsn(t), ledger.Config{}, psdm.Config{})
	ctx := context.Background()
	to := f.clock.Now()
	f.at(to.Add(time.Minute))
	tx, err := f.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var floor int64
	if err := tx.QueryRowContext(ctx, `SELECT floor FROM report_floor WHERE id = 1`).Scan(&floor); err != nil {
		t.Fatal(err)
	}
	type built struct {
		r   *hubpostal.Report
		err error
	}
	done := make(chan built, 1)
	go func() {
		r, err := f.l.BuildReport(ctx, to.Add(-time.Hour), to)
		done <- built{r, err}
	}()
	wait.Never(t, 300*time.Millisecond, "the report built while a writer of the old floor is open", func() bool { return len(done) > 0 })
	if _, err := tx.ExecContext(ctx, `INSERT INTO device_events (kind, subject, detail, at) VALUES ('test', 'late', 'dated by the old floor', $1)`,
		to.Add(-time.Second).UnixMicro()); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	var b built
	select {
	case b = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the report was never built")
	}
	if b.err != nil {
		t.Fatal(b.err)
	}
	for _, e := range b.r.Events {
		if e.Subject == "late" {
			return
		}
	}
	t.Fatalf("the row the writer committed while the report waited is not in it: %+v", b.r.Events)
}
