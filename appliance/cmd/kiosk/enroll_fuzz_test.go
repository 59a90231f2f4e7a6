package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzReadEnrollment feeds the kiosk's saved enrollment file to
// readEnrollment. It never panics; a file others may read is refused
// whatever it holds; a file it refuses is an error that names the file,
// with no enrollment; and one it takes reads as the JSON says, names the
// kiosk and a certificate or a password, and survives being written and
// read again as it was.
func FuzzReadEnrollment(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, "enrollment.json")
	again := filepath.Join(dir, "again.json")
	for _, s := range []string{
		`{"kiosk_id": "store12-k1", "store": "store12", "broker": "mqtts://hub.example:8883", "username": "store12-k1",
		  "cert_dir": "/var/lib/frank/kiosk", "fingerprint": "SHA256:abc", "origin_zip": "94544",
		  "hub": "https://hub.example:8443", "enrolled_at": "2026-01-02T03:04:05Z"}`,
		`{"kiosk_id": "k1", "broker": "tcp://hub:1883", "username": "k1", "password": "secret", "hub": "http://127.0.0.1:8080",
		  "enrolled_at": "0001-01-01T00:00:00Z"}`,
		`{"kiosk_id": "k1"}`, `{"password": "p"}`, `{"kiosk_id": "k1", "password": ""}`, `{"kiosk_id": 1, "password": "p"}`,
		`{"kiosk_id": "k1", "password": "p", "enrolled_at": "yesterday"}`,
		`{"kiosk_id": "k1", "password": "p", "enrolled_at": "2026-01-02T03:04:05+23:59"}`,
		`{"kiosk_id": "k1", "password": "p", "enrolled_at": "9999-12-31T23:59:59.999999999-23:59"}`,
		`{"kiosk_id": "k1", "kiosk_id": "k2", "password": "p"}`, `{"KIOSK_ID": "k1", "password": "p", "extra": [1, {}]}`,
		`{"kiosk_id": "k1", "password": "p"} trailing`, `{"kiosk_id": "k1", "password": "\ud800"}`,
		`null`, `[]`, `""`, ``, `{`, "\xff", `{"kiosk_id": "` + strings.Repeat("k", 1<<12) + `", "password": "p"}`,
	} {
		f.Add([]byte(s), false)
	}
	f.Add([]byte(`{"kiosk_id": "k1", "password": "p"}`), true)
	f.Fuzz(func(t *testing.T, b []byte, shared bool) {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o600)
		if shared {
			mode = 0o640
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		e, err := readEnrollment(path)
		if shared {
			if err == nil || e != nil || !strings.Contains(err.Error(), "chmod 600") {
				t.Fatalf("%q with mode %v: %+v, %v; want it refused", b, mode, e, err)
			}
			return
		}
		if err != nil {
			if e != nil || !strings.HasPrefix(err.Error(), "enrollment "+path+": ") {
				t.Fatalf("%q: %+v and the error %q, which does not name the file", b, e, err)
			}
			return
		}
		var want enrollment
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("%q taken, but it is not JSON: %v", b, err)
		}
		if e.KioskID == "" || e.Password == "" && e.CertDir == "" {
			t.Fatalf("%q taken with no kiosk id, or neither a certificate nor a password: %+v", b, e)
		}
		if !sameEnrollment(*e, want) {
			t.Fatalf("%q read as %+v, want %+v", b, *e, want)
		}
		// What the kiosk writes of it (as writeEnrollment does, without
		// its fsyncs, which would slow the fuzzer) reads back the same.
		out, err := json.MarshalIndent(e, "", "  ")
		if err != nil {
			t.Fatalf("%q: %+v does not write back: %v", b, *e, err)
		}
		if err := os.WriteFile(again, append(out, '\n'), 0o600); err != nil {
			t.Fatal(err)
		}
		back, err := readEnrollment(again)
		if err != nil || !sameEnrollment(*back, *e) {
			t.Fatalf("%q: %+v written and read back as %+v, %v", b, *e, back, err)
		}
	})
}

// sameEnrollment compares enrollments, their times as instants.
func sameEnrollment(a, b enrollment) bool {
	if !a.EnrolledAt.Equal(b.EnrolledAt) {
		return false
	}
	a.EnrolledAt = b.EnrolledAt
	return a == b
}
