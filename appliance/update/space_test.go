package update_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/update"
	"github.com/frank-postage/frank/protocol"
)

func versions(t *testing.T, s *update.Store) map[string]bool {
	t.Helper()
	dirs, err := os.ReadDir(filepath.Join(s.Dir, "versions"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, d := range dirs {
		got[d.Name()] = true
	}
	return got
}

// plant leaves a version directory as an old release, or a download
// cut short, would.
func plant(t *testing.T, s *update.Store, version, file string) {
	t.Helper()
	p := filepath.Join(s.Dir, "versions", version, file)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("old"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// Releases share a 2 GB card with the sale journal: once a release is
// healthy, only the current, previous (the rollback target) and proven
// (the floor) releases stay; a release staged over others deletes all
// but those and itself. A partial download of another release goes too.
func TestOldReleasesDeleted(t *testing.T) {
	day := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	sg := newSigner(t)
	s := &update.Store{Dir: t.TempDir(), Key: sg.pub}
	for i, v := range []string{"1.0.0", "2.0.0", "3.0.0"} {
		if err := sg.install(s, "cmd-"+v, sg.offer(v, day.Add(time.Duration(i)*time.Hour))); err != nil {
			t.Fatal(err)
		}
		if v == "3.0.0" {
			break // on trial
		}
		if err := s.MarkHealthy(v); err != nil {
			t.Fatal(err)
		}
	}
	plant(t, s, "2.5.0", update.Binary)         // staged, never installed
	plant(t, s, "4.0.0", update.Binary+".part") // a download cut short
	if err := s.MarkHealthy("3.0.0"); err != nil {
		t.Fatal(err)
	}
	if got := versions(t, s); len(got) != 2 || !got["3.0.0"] || !got["2.0.0"] {
		t.Fatalf("versions once 3.0.0 is healthy: %v; want 3.0.0 (current, proven) and 2.0.0 (previous)", got)
	}

	plant(t, s, "0.9.0", update.Binary)
	plant(t, s, "4.5.0", update.Binary+".part")
	if _, err := s.Stage(context.Background(), sg.srv.Client(), sg.srv.URL, sg.offer("5.0.0", day.Add(5*time.Hour)), "amd64"); err != nil {
		t.Fatal(err)
	}
	if got := versions(t, s); len(got) != 3 || !got["3.0.0"] || !got["2.0.0"] || !got["5.0.0"] {
		t.Fatalf("versions once 5.0.0 is staged: %v; want 2.0.0, 3.0.0, 5.0.0", got)
	}
}

// A release that would not leave the journal's reserve free is refused
// before any download, as update_failed (the command's failure at the
// hub); a partial download counts toward it.
func TestStageRefusedWithoutRoom(t *testing.T) {
	ctx := context.Background()
	bin := make([]byte, 10_000)
	pub, offer, srv, gets := release(t, "2.0.0", bin)
	s := &update.Store{Dir: t.TempDir(), Key: pub}
	var free uint64 = update.JournalReserve + uint64(len(bin)) - 1
	update.SetFreeSpace(s, func(string) (uint64, error) { return free, nil })

	_, err := s.Stage(ctx, srv.Client(), srv.URL, offer, "amd64")
	var nospace *update.NoSpaceError
	if !errors.As(err, &nospace) || protocol.AsError(err).Code != protocol.CodeUpdateFailed || gets.Load() != 0 {
		t.Fatalf("1 byte short of the release and the reserve: %v after %d requests; want a NoSpaceError, update_failed, before any download", err, gets.Load())
	}
	if _, err := os.Stat(s.BinaryOf("2.0.0") + ".part"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a partial file after the refusal: %v", err)
	}

	free++
	if _, err := s.Stage(ctx, srv.Client(), srv.URL, offer, "amd64"); err == nil || errors.As(err, &nospace) {
		t.Fatalf("room for it, the download cut: %v; want the cut's error", err)
	}
	part, err := os.Stat(s.BinaryOf("2.0.0") + ".part")
	if err != nil {
		t.Fatal(err)
	}
	free = update.JournalReserve + uint64(len(bin)) - uint64(part.Size()) // room for the rest
	if _, err := s.Stage(ctx, srv.Client(), srv.URL, offer, "amd64"); err != nil {
		t.Fatalf("room for the rest of a partial download: %v", err)
	}
}

// A download the disk fills up during is update_failed, and its partial
// file is deleted: kept, it would hold the journal's room.
func TestDownloadOutOfSpaceRemovesPartial(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Fatal("the test fills a download with /dev/full, which Linux has:", err)
	}
	pub, offer, srv, _ := release(t, "2.0.0", make([]byte, 10_000))
	s := &update.Store{Dir: t.TempDir(), Key: pub}
	part := s.BinaryOf("2.0.0") + ".part"
	if err := os.MkdirAll(filepath.Dir(part), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/full", part); err != nil { // every write: ENOSPC
		t.Fatal(err)
	}
	_, err := s.Stage(context.Background(), srv.Client(), srv.URL, offer, "amd64")
	var nospace *update.NoSpaceError
	if !errors.As(err, &nospace) || protocol.AsError(err).Code != protocol.CodeUpdateFailed {
		t.Fatalf("disk full during the download: %v; want a NoSpaceError, update_failed", err)
	}
	if _, err := os.Lstat(part); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("partial file after the disk filled: %v", err)
	}
}
