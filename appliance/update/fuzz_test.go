package update_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/update"
)

// FuzzStoreState feeds the releases directory's state files, trial.json
// and outcome.json, to the store that reads them at every start: a file a
// power cut or a full disk left as anything. Neither read panics; a file
// that is not the record's JSON reads as none (no trial, no outcome), and
// one that is reads as what it says; and a trial read ends healthy as it
// would in service, its outcome then naming its command and version.
func FuzzStoreState(f *testing.F) {
	dir := f.TempDir()
	s := &update.Store{Dir: dir}
	f.Add([]byte(`{"version":"1.2.0","previous":"1.1.0","command_id":"c-1","deadline":"2030-01-01T00:00:00Z","attempts":1}`),
		[]byte(`{"command_id":"c-0","version":"1.1.0","status":"ok","at":"2025-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"version":"1.2.0","previous":"","command_id":"c-1","deadline":"2030-01-01T00:00:00Z","attempts":3}`),
		[]byte(`{"command_id":"c-0","version":"1.1.0","status":"rolled_back","why":"it stopped 3 times","at":"2025-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"version":"1.2.0","deadline":"not a time"}`), []byte(`{"at":1}`))
	f.Add([]byte(`{"version":"1.2.0","attempts":1e99}`), []byte(`{"status":"ok"`))
	f.Add([]byte(`null`), []byte(``))
	f.Add([]byte(`{"version":"\u00e9\ud800"}`), []byte("\xff"))
	f.Fuzz(func(t *testing.T, trial, outcome []byte) {
		for name, b := range map[string][]byte{"trial.json": trial, "outcome.json": outcome} {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		var wantT update.Trial
		terr := json.Unmarshal(trial, &wantT)
		switch got := s.Trial(); {
		case terr != nil && got != nil:
			t.Fatalf("trial.json %q (%v) read as %+v", trial, terr, got)
		case terr == nil && (got == nil || !sameTrial(*got, wantT)):
			t.Fatalf("trial.json %q read as %+v, want %+v", trial, got, wantT)
		}
		var wantO update.Outcome
		oerr := json.Unmarshal(outcome, &wantO)
		switch got := s.LastOutcome(); {
		case oerr != nil && got != nil:
			t.Fatalf("outcome.json %q (%v) read as %+v", outcome, oerr, got)
		case oerr == nil && (got == nil || got.CommandID != wantO.CommandID || got.Version != wantO.Version ||
			got.Status != wantO.Status || got.Why != wantO.Why || !got.At.Equal(wantO.At)):
			t.Fatalf("outcome.json %q read as %+v, want %+v", outcome, got, wantO)
		}
		tr := s.Trial()
		if tr == nil {
			return
		}
		if err := s.MarkHealthy(tr.Version); err != nil {
			t.Fatalf("healthy %q: %v", tr.Version, err)
		}
		if s.Trial() != nil {
			t.Fatal("a trial stays after its release was healthy")
		}
		if o := s.LastOutcome(); o == nil || o.Status != update.Healthy || o.Version != tr.Version || o.CommandID != tr.CommandID {
			t.Fatalf("outcome %+v, want ok for %q (command %q)", o, tr.Version, tr.CommandID)
		}
	})
}

func sameTrial(a, b update.Trial) bool {
	deadline := a.Deadline.Equal(b.Deadline)
	a.Deadline, b.Deadline = time.Time{}, time.Time{}
	return deadline && a == b
}
