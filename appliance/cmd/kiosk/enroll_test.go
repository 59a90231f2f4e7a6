package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEnrollmentFileIsPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kiosk", "enrollment.json")
	e := &enrollment{KioskID: "k1", Store: "s1", Broker: "tcp://hub:1883", Username: "k1", Password: "secret", OriginZIP: "02134"}
	if err := writeEnrollment(path, e); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("enrollment file mode %v %v, want 0600", fi.Mode().Perm(), err)
	}
	got, err := readEnrollment(path)
	if err != nil || *got != *e {
		t.Fatalf("read back %+v %v", got, err)
	}
	// A copy others can read is refused: it holds the broker password.
	os.Chmod(path, 0o644)
	if _, err := readEnrollment(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable enrollment was accepted: %v", err)
	}
	if _, err := readEnrollment(filepath.Join(filepath.Dir(path), "missing.json")); !os.IsNotExist(err) {
		t.Fatalf("missing file: %v", err)
	}
}
