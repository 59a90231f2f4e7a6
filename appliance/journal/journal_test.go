package journal_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/journal"
)

// A sale cut off at each step reopens as exactly what it was, and Settle
// says what the restart owes: printed labels confirmed, every other label
// failed and refunded, none printed again.
func TestEveryStepSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	labels := []string{"1966-F8CF-01", "1966-F8CF-02", "1966-F8CF-03"}
	steps := []struct {
		name          string
		do            func(j *journal.Journal, id string) error
		answered      bool
		printed, fail int
	}{
		{"begun", func(*journal.Journal, string) error { return nil }, false, 0, 3},
		{"answered", func(j *journal.Journal, id string) error { return j.Answer(ctx, id, []byte(`{"status":"ok"}`)) }, true, 0, 3},
		{"first printing", func(j *journal.Journal, id string) error {
			return errors.Join(j.Answer(ctx, id, []byte(`{}`)), j.SetLabel(ctx, id, labels[0], journal.Printing, ""))
		}, true, 0, 3},
		{"first printed, second jammed", func(j *journal.Journal, id string) error {
			return errors.Join(j.Answer(ctx, id, []byte(`{}`)), j.SetLabel(ctx, id, labels[0], journal.Printed, ""),
				j.SetLabel(ctx, id, labels[1], journal.Failed, "jam"))
		}, true, 1, 2},
		{"all printed", func(j *journal.Journal, id string) error {
			var errs []error
			for _, l := range labels {
				errs = append(errs, j.SetLabel(ctx, id, l, journal.Printed, ""))
			}
			return errors.Join(append(errs, j.Answer(ctx, id, []byte(`{}`)))...)
		}, true, 3, 0},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "journal.db")
			j, err := journal.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := j.Begin(ctx, "r-1", []byte(`{"request_id":"r-1"}`), labels); err != nil {
				t.Fatal(err)
			}
			if err := st.do(j, "r-1"); err != nil {
				t.Fatal(err)
			}
			j.Close() // the power goes
			if j, err = journal.Open(path); err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			open, err := j.Unfinished(ctx)
			if err != nil || len(open) != 1 {
				t.Fatalf("unfinished %v %v", open, err)
			}
			s := open[0]
			if string(s.Request) != `{"request_id":"r-1"}` || (s.Result != nil) != st.answered {
				t.Fatalf("sale %+v", s)
			}
			printed, failed := s.Settle("power_cut")
			if len(printed) != st.printed || len(failed) != st.fail {
				t.Fatalf("settle: %d printed, %d failed; want %d, %d", len(printed), len(failed), st.printed, st.fail)
			}
			for _, l := range failed {
				if l.Reason == "" {
					t.Fatalf("failed label without a reason: %+v", l)
				}
			}
			if err := j.Finish(ctx, "r-1"); err != nil {
				t.Fatal(err)
			}
			if open, _ := j.Unfinished(ctx); len(open) != 0 {
				t.Fatalf("finished sale still open: %+v", open)
			}
		})
	}
}

func TestUnknownSaleAndDuplicate(t *testing.T) {
	ctx := context.Background()
	j, err := journal.Open(filepath.Join(t.TempDir(), "j.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if err := j.Answer(ctx, "nope", nil); !errors.Is(err, journal.ErrUnknownSale) {
		t.Fatalf("answer to an unknown sale: %v", err)
	}
	if err := j.Begin(ctx, "r", []byte("x"), []string{"A"}); err != nil {
		t.Fatal(err)
	}
	if err := j.Begin(ctx, "r", []byte("y"), []string{"B"}); err == nil {
		t.Fatal("a request id began twice")
	}
	s, _ := j.Get(ctx, "r")
	if string(s.Request) != "x" || len(s.Labels) != 1 {
		t.Fatalf("the failed second begin changed the sale: %+v", s)
	}
}

// A command's result and a setting survive a reopen: a kiosk restarted by
// a command answers the command's repeat without restarting again, and a
// lock outlives the power.
func TestCommandsAndSettingsSurviveReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "journal.db")
	j, err := journal.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := j.CommandResult(ctx, "cmd-1"); err != nil || b != nil {
		t.Fatalf("unknown command: %q %v", b, err)
	}
	if err := j.CommandDone(ctx, "cmd-1", []byte(`{"status":"ok"}`)); err != nil {
		t.Fatal(err)
	}
	if err := j.CommandDone(ctx, "cmd-1", []byte(`{"status":"other"}`)); err != nil {
		t.Fatal(err)
	}
	if err := j.SetSetting(ctx, "service", []byte(`{"locked":true}`)); err != nil {
		t.Fatal(err)
	}
	j.Close()
	if j, err = journal.Open(path); err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if b, err := j.CommandResult(ctx, "cmd-1"); err != nil || string(b) != `{"status":"ok"}` {
		t.Fatalf("command result after reopen: %q %v (the first result stands)", b, err)
	}
	if b, err := j.Setting(ctx, "service"); err != nil || string(b) != `{"locked":true}` {
		t.Fatalf("setting after reopen: %q %v", b, err)
	}
	if b, err := j.Setting(ctx, "nothing"); err != nil || b != nil {
		t.Fatalf("unset setting: %q %v", b, err)
	}
}

// A journal with a damaged page is refused at Open, saying so: it would
// open fine and fail only the reads that reach the page, leaving a kiosk
// that looks in service, refuses every sale and never settles what the
// page held.
func TestDamagedJournalRefusedAtOpen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "journal.db")
	j, err := journal.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		id := fmt.Sprintf("sale-%04d", i)
		if err := j.Begin(ctx, id, make([]byte, 300), []string{id + "-L"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil { // checkpoints the WAL into the file
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 4096), 3*4096); err != nil { // a page of the sales
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	j, err = journal.Open(path)
	if err == nil {
		j.Close()
		t.Fatal("a damaged journal opened")
	}
	if !errors.Is(err, journal.ErrDamaged) {
		t.Fatalf("Open: %v, want %v", err, journal.ErrDamaged)
	}
}

// The times a journal records never run backwards, across a step of the
// clock and a reopen on a clock behind (a Pi back from a power cut on the
// time it last saved), nor before a time it is told of (a shift's end).
func TestRecordedTimesNeverRunBack(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir() + "/journal.db"
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	now := t0
	j, err := journal.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	j.SetClock(func() time.Time { return now })
	started := func(id string) time.Time {
		t.Helper()
		s, err := j.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return s.Started
	}
	if err := j.Begin(ctx, "a", []byte(`{}`), nil); err != nil {
		t.Fatal(err)
	}
	now = t0.Add(-time.Minute) // NTP pulls a fast clock back
	if err := j.Begin(ctx, "b", []byte(`{}`), nil); err != nil {
		t.Fatal(err)
	}
	if !started("b").After(started("a")) {
		t.Fatalf("b began at %s, a at %s: the journal ran back with its clock", started("b"), started("a"))
	}
	j.Close()

	if j, err = journal.Open(path); err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	now = t0.Add(-time.Hour) // reopened on a clock an hour behind
	j.SetClock(func() time.Time { return now })
	if err := j.Begin(ctx, "c", []byte(`{}`), nil); err != nil {
		t.Fatal(err)
	}
	if !started("c").After(started("b")) {
		t.Fatalf("after a reopen on a clock behind, c began at %s, b at %s", started("c"), started("b"))
	}
	end := t0.Add(time.Hour)
	j.NotBefore(end)
	if at := j.Now(); !at.After(end) {
		t.Fatalf("told of %s, the journal records next at %s", end, at)
	}
}
