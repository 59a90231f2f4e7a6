package reports_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/reports"
	"github.com/frank-postage/frank/hub/store"
)

// fakeBook files reports in memory, as the ledger does in the database.
type fakeBook struct {
	mu    sync.Mutex
	until time.Time
	filed []*postal.Report
}

func (b *fakeBook) ReportedUntil(context.Context) (time.Time, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.until, nil
}

func (b *fakeBook) PendingPeriod(context.Context, time.Time) (time.Time, time.Time, bool, error) {
	return time.Time{}, time.Time{}, false, nil
}

func (b *fakeBook) BuildReport(_ context.Context, from, to time.Time) (*postal.Report, error) {
	return &postal.Report{From: from, To: to}, nil
}

func (b *fakeBook) SubmitReport(ctx context.Context, r *postal.Report, pa ledger.Submitter) (string, error) {
	ref, err := pa.SubmitReport(ctx, r)
	if err != nil {
		return "", err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.filed = append(b.filed, r)
	b.until = r.To
	return ref, nil
}

type authority struct{ refuse bool }

func (a *authority) SubmitReport(context.Context, *postal.Report) (string, error) {
	if a.refuse {
		return "", &postal.RefusedError{Status: 422, Answer: "report does not add up"}
	}
	return "RPT", nil
}

type noAlerts struct{}

func (noAlerts) Raise(context.Context, string, string, string) {}
func (noAlerts) Clear(context.Context, string, string, string) {}

// Two hubs on one database: only the lease holder files, each period once;
// when it stops, the other takes over after the lease runs out.
func TestOneHubReports(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2026, 12, 1, 10, 30, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	book := &fakeBook{until: now}
	pa := &authority{}
	log := slog.New(slog.DiscardHandler)
	a := reports.New(reports.Config{Every: time.Hour, Holder: "hub-a", Now: clock}, book, pa, db, noAlerts{}, log)
	b := reports.New(reports.Config{Every: time.Hour, Holder: "hub-b", Now: clock}, book, pa, db, noAlerts{}, log)
	const ttl = 2 * time.Hour
	now = now.Add(3 * time.Hour) // 13:30
	for range 3 {
		if err := a.Tick(ctx, ttl); err != nil {
			t.Fatal(err)
		}
		if err := b.Tick(ctx, ttl); err != nil {
			t.Fatal(err)
		}
	}
	if len(book.filed) != 3 { // 10:30-11, 11-12, 12-13; 13-14 has not ended
		t.Fatalf("%d reports filed, want 3", len(book.filed))
	}
	// hub-a is gone; hub-b waits out its lease (until 15:30), then files.
	now = now.Add(time.Hour) // 14:30
	if b.Tick(ctx, ttl); len(book.filed) != 3 {
		t.Fatal("hub-b filed under hub-a's lease")
	}
	now = now.Add(time.Hour + time.Minute) // 15:31
	if err := b.Tick(ctx, ttl); err != nil || len(book.filed) != 5 {
		t.Fatalf("hub-b after the lease: %d filed, %v", len(book.filed), err)
	}
	// A refusal backs off: no new try before a minute has passed.
	pa.refuse = true
	now = now.Add(time.Hour) // 16:31: 15-16 is due
	if err := b.Tick(ctx, ttl); err == nil {
		t.Fatal("refused report: no error")
	}
	pa.refuse = false
	now = now.Add(30 * time.Second)
	if b.Tick(ctx, ttl); len(book.filed) != 5 {
		t.Fatal("tried again within the backoff")
	}
	now = now.Add(time.Minute)
	if err := b.Tick(ctx, ttl); err != nil || len(book.filed) != 6 {
		t.Fatalf("after the backoff: %d filed, %v", len(book.filed), err)
	}
}
