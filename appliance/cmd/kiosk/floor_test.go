package main

import (
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// A packaged binary knows its build's date (the Makefile and images/build
// stamp it): the downgrade floor until a release runs healthy, so that a
// fresh image, or a kiosk after a .deb install, takes no release signed
// before it. An unstamped dev build has none.
func TestPackagedBuildIsTheFloor(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	defer func(b string) { built = b }(built)

	built = ""
	s, err := newUpdates("", filepath.Join(dir, "journal.db"), filepath.Join(dir, "no-key.pub"), log)
	if err != nil || !s.Packaged.IsZero() || s.Dir != filepath.Join(dir, "releases") {
		t.Fatalf("dev build: %+v %v; want no floor", s, err)
	}

	// What make stamps, as make would.
	mk, err := exec.LookPath("make")
	if err != nil {
		t.Fatal("make is needed to read the date it stamps (apt-get install make):", err)
	}
	out, err := exec.Command(mk, "-s", "-n", "-C", "../../..", "build").Output()
	if err != nil {
		t.Fatalf("make -n build: %v", err)
	}
	m := regexp.MustCompile(`-X main\.built=([^\s"]*)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("make build stamps no main.built: %s", out)
	}
	built = string(m[1])
	if built == "" {
		t.Fatal("make stamps no date: run the tests in a git checkout, whose last commit dates the build")
	}
	s, err = newUpdates("", filepath.Join(dir, "journal.db"), filepath.Join(dir, "no-key.pub"), log)
	if err != nil || s.Packaged.IsZero() || s.Packaged.Location() != time.UTC {
		t.Fatalf("stamped %q: %+v %v; want its date, in UTC, as the floor", built, s, err)
	}
	if f := s.Floor(); !f.Created.Equal(s.Packaged) {
		t.Fatalf("floor %+v; want the packaged build's %v", f, s.Packaged)
	}
	b, err := os.ReadFile("../../../images/build")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`-X main\.built=\$built`).Match(b) {
		t.Fatal("images/build stamps no main.built into the packages")
	}

	built = "last tuesday"
	if _, err := newUpdates("", filepath.Join(dir, "journal.db"), filepath.Join(dir, "no-key.pub"), log); err == nil {
		t.Fatal("a build date that does not parse was taken: the floor would be off")
	}
}
