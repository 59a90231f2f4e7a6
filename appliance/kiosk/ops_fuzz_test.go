package kiosk

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/frank-postage/frank/appliance/journal"
)

// FuzzOpsState feeds what the journal keeps of ops' remote settings
// (out of service, locked, the screen's message) to restoreOps, as a
// kiosk reads it at every start, on one kiosk and journal for the whole
// run. It never panics; a value that is not the setting's JSON leaves the
// kiosk as ops never touched it (and is logged); one that is becomes the
// kiosk's state, so a kiosk ops locked comes back locked.
func FuzzOpsState(f *testing.F) {
	j, err := journal.Open(filepath.Join(f.TempDir(), "journal.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { j.Close() })
	k, err := New(Config{ID: "k1", OriginZIP: "94544"}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		f.Fatal(err)
	}
	k.UseJournal(j)
	for _, s := range []string{`{"out_of_service":true,"message":"back at 3"}`, `{"locked":true}`, `{}`, `null`, ``,
		`{"locked":"yes"}`, `{"locked":true`, `[true]`, `{"locked":true,"locked":false}`, `{"message":"\ud800"}`} {
		f.Add([]byte(s))
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := j.SetSetting(ctx, opsSetting, b); err != nil {
			t.Fatal(err)
		}
		k.ds.mu.Lock()
		k.ds.ops = opsState{}
		k.ds.mu.Unlock()
		k.restoreOps(ctx)
		var want opsState
		if json.Unmarshal(b, &want) != nil {
			want = opsState{}
		}
		k.ds.mu.Lock()
		got := k.ds.ops
		k.ds.mu.Unlock()
		if got != want {
			t.Fatalf("ops state %q restored as %+v, want %+v", b, got, want)
		}
		if k.locked() != want.Locked || len(opsReasons(got)) != btoi(want.Locked)+btoi(want.OutOfService) {
			t.Fatalf("ops state %+v: locked %v, reasons %v", got, k.locked(), opsReasons(got))
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
