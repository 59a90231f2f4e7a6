package alerts_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// fixture is an alert store on a fresh database, with a clock the test
// moves and a log it reads.
type fixture struct {
	*alerts.Store
	db  *store.DB
	now time.Time
	mu  sync.Mutex
	buf bytes.Buffer
}

func newFixture(t *testing.T, dsn string) *fixture {
	db, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f := &fixture{db: db, now: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	f.Store = alerts.New(db, slog.New(slog.NewTextHandler(f, nil)), func() time.Time { return f.now })
	return f
}

func (f *fixture) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.buf.Write(p)
}

// lines returns the log's lines that contain all of words.
func (f *fixture) lines(words ...string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(f.buf.String()), "\n") {
		ok := l != ""
		for _, w := range words {
			ok = ok && strings.Contains(l, w)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

func (f *fixture) all(t *testing.T, kind, subject string) []alerts.Alert {
	t.Helper()
	as, err := f.List(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	var out []alerts.Alert
	for _, a := range as {
		if a.Kind == kind && a.Subject == subject {
			out = append(out, a)
		}
	}
	return out
}

// An alert the hub clears and sees raised again within FlapWindow is the
// same row reopened, with the latest message and time, and its flips are
// logged once per window, not each time; past the window it is a new
// alert again.
func TestFlappingAlertReopensOneRow(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn)
		ctx := context.Background()
		const subject = "kiosk/kiosk-1"
		for i := range 100 {
			f.now = f.now.Add(100 * time.Millisecond)
			f.Raise(ctx, alerts.PaperOut, subject, "kiosk kiosk-1 needs paper: the printer says out")
			f.now = f.now.Add(100 * time.Millisecond)
			if i < 99 {
				f.Clear(ctx, alerts.PaperOut, subject, "paper loaded")
			}
		}
		rows := f.all(t, alerts.PaperOut, subject)
		if len(rows) != 1 || rows[0].Acked != nil || !rows[0].Created.Equal(f.now.Add(-100*time.Millisecond)) {
			t.Fatalf("100 flips in 20 s left %+v, want one open alert raised at the last flip", rows)
		}
		raised, cleared := f.lines("msg=ALERT", "kind=paper_out"), f.lines(`msg="alert cleared"`, "kind=paper_out")
		if len(raised)+len(cleared) > 3 {
			t.Errorf("100 flips logged %d raises and %d clears, want the first of each and one reopen:\n%s",
				len(raised), len(cleared), strings.Join(append(raised, cleared...), "\n"))
		}

		// A window later the flapping is logged again, with what was not: 98
		// reopens and 98 clears.
		f.now = f.now.Add(alerts.FlapWindow)
		f.Clear(ctx, alerts.PaperOut, subject, "paper loaded")
		if l := f.lines(`msg="alert cleared"`, "unlogged_changes=196"); len(l) != 1 {
			t.Errorf("the clear a window later does not say what was unlogged: %q", f.lines("alert cleared"))
		}
		// Raised again more than FlapWindow after the hub cleared it: a
		// new alert, logged.
		f.now = f.now.Add(alerts.FlapWindow + time.Second)
		f.Raise(ctx, alerts.PaperOut, subject, "kiosk kiosk-1 needs paper: the printer says out")
		if rows := f.all(t, alerts.PaperOut, subject); len(rows) != 2 || rows[0].Acked != nil || rows[1].Acked == nil {
			t.Fatalf("raised a window after its clear: %+v, want a new open alert beside the cleared one", rows)
		}
	})
}

// What a person acknowledged stays acknowledged: the same alert raised
// again a second later is a new one, and another kind or subject never
// reopens a row not its own.
func TestAckedAlertNotReopened(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn)
		ctx := context.Background()
		f.Raise(ctx, alerts.Fraud, "label/1966-F8CF-01", "label offered again")
		open, _ := f.List(ctx, true)
		if len(open) != 1 {
			t.Fatalf("open: %+v", open)
		}
		if err := f.Ack(ctx, open[0].ID, "olivia"); err != nil {
			t.Fatal(err)
		}
		f.now = f.now.Add(time.Second)
		f.Raise(ctx, alerts.Fraud, "label/1966-F8CF-01", "label offered again")
		if rows := f.all(t, alerts.Fraud, "label/1966-F8CF-01"); len(rows) != 2 || rows[1].AckedBy != "olivia" || rows[0].Acked != nil {
			t.Fatalf("raised after a person's ack: %+v", rows)
		}
		f.Raise(ctx, alerts.PaperOut, "kiosk/kiosk-1", "needs paper")
		f.Clear(ctx, alerts.PaperOut, "kiosk/kiosk-1", "paper loaded")
		f.Raise(ctx, alerts.PaperOut, "kiosk/kiosk-2", "needs paper")
		f.Raise(ctx, alerts.LabelsLow, "kiosk/kiosk-1", "labels low")
		if rows := f.all(t, alerts.PaperOut, "kiosk/kiosk-1"); len(rows) != 1 || rows[0].Acked == nil {
			t.Fatalf("another kiosk's or kind's alert reopened kiosk-1's paper_out: %+v", rows)
		}
		// Raised while open: still one, and not logged again.
		f.Raise(ctx, alerts.PaperOut, "kiosk/kiosk-2", "needs paper")
		if rows, logged := f.all(t, alerts.PaperOut, "kiosk/kiosk-2"), f.lines("msg=ALERT", "subject=kiosk/kiosk-2"); len(rows) != 1 || len(logged) != 1 {
			t.Fatalf("raised twice while open: %d rows, %d log lines", len(rows), len(logged))
		}
	})
}

// A message is cut to MaxMessageBytes in the store and the log, whoever
// built it from what.
func TestAlertMessageBounded(t *testing.T) {
	f := newFixture(t, t.TempDir()+"/hub.db")
	ctx := context.Background()
	f.Raise(ctx, alerts.PrinterFault, "kiosk/kiosk-1", "kiosk kiosk-1's printer says "+strings.Repeat("é", 30_000))
	rows := f.all(t, alerts.PrinterFault, "kiosk/kiosk-1")
	if len(rows) != 1 || len(rows[0].Message) > alerts.MaxMessageBytes || !strings.HasSuffix(rows[0].Message, "é…") {
		t.Fatalf("stored %d bytes: %.80q...", len(rows[0].Message), rows[0].Message)
	}
	for _, l := range f.lines("msg=ALERT") {
		if len(l) > 2*alerts.MaxMessageBytes {
			t.Fatalf("logged a %d-byte line", len(l))
		}
	}
}
