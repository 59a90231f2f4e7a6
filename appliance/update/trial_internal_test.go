package update

import (
	"testing"
	"time"
)

// The launcher supervising a trial holds it in memory; it may roll back
// only while that trial is still the one on disk, or it would undo a
// release it never started and delete that release's trial.
func TestOwnTrialOnlyWhileOnDisk(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	mine := &Trial{Version: "2.0.0", CommandID: "cmd-A", Deadline: time.Now()}
	if s.ownTrial(mine) {
		t.Fatal("no trial on disk, yet it is ours")
	}
	if err := writeJSON(s.path("trial.json"), mine); err != nil {
		t.Fatal(err)
	}
	if !s.ownTrial(mine) {
		t.Fatal("our trial on disk is not ours")
	}
	if err := writeJSON(s.path("trial.json"), Trial{Version: "3.0.0", Previous: "", CommandID: "cmd-B"}); err != nil {
		t.Fatal(err)
	}
	if s.ownTrial(mine) {
		t.Fatal("another release's trial counts as ours")
	}
}
