package update_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/update"
)

// A power cut may stop MarkHealthy after any of its steps, and the power
// may stay off past the trial's wall deadline. The launcher's next start
// then keeps the release once its healthy outcome is on disk (the kiosk
// may have told the hub ok), and before that gives it another start on
// trial, its time to pass its health check running again (the time off
// is no running time): what is on disk, outcome and current release,
// always agrees.
func TestHealthCheckCutAfterEachStep(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	install := func(t *testing.T) *update.Store {
		t.Helper()
		s := &update.Store{Dir: t.TempDir()}
		p := s.BinaryOf("2.0.0")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := s.Install("cmd-h", "2.0.0", time.Minute); err != nil {
			t.Fatal(err)
		}
		return s
	}
	n := len(install(t).HealthySteps("2.0.0"))
	if n < 2 {
		t.Fatalf("MarkHealthy has %d steps", n)
	}
	for cut := 0; cut <= n; cut++ {
		s := install(t)
		// The health check passed just before the deadline: the power
		// comes back after it.
		tr := s.Trial()
		tr.Deadline = time.Now().Add(-time.Second)
		b, _ := json.Marshal(tr)
		if err := os.WriteFile(filepath.Join(s.Dir, "trial.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, step := range s.HealthySteps("2.0.0")[:cut] {
			if err := step(); err != nil {
				t.Fatal(err)
			}
		}
		// --- power cut here; the launcher starts ---
		supervise, err := s.Start(log)
		if cut == 0 {
			if err != nil || supervise == nil || supervise.Attempts != 1 || s.Current() != "2.0.0" || s.LastOutcome() != nil {
				t.Fatalf("cut before the health check: start: trial to supervise %+v, %v, current %q, outcome %+v; want another start on trial",
					supervise, err, s.Current(), s.LastOutcome())
			}
			continue
		}
		if err != nil || supervise != nil {
			t.Fatalf("cut after %d of %d steps: start: trial to supervise %+v, %v; want it ended", cut, n, supervise, err)
		}
		o := s.LastOutcome()
		if s.Trial() != nil || o == nil || o.CommandID != "cmd-h" || o.Version != "2.0.0" {
			t.Fatalf("cut after %d steps: trial %+v, outcome %+v", cut, s.Trial(), o)
		}
		want, cur := update.Healthy, "2.0.0"
		if o.Status != want || s.Current() != cur {
			t.Fatalf("cut after %d of %d steps: outcome %s, current %q; want %s, %q", cut, n, o.Status, s.Current(), want, cur)
		}
		// A second start changes nothing.
		if again, err := s.Start(log); err != nil || again != nil || s.Current() != cur || s.LastOutcome().Status != want {
			t.Fatalf("cut after %d steps: second start: %+v %v, current %q", cut, again, err, s.Current())
		}
	}
}
