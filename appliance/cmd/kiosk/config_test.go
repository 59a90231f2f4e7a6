package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A config file holding staff badges or the staff PIN's hash is refused
// while every user may read it, naming the file and the fix; one without
// them, or readable only by owner and group, is taken.
func TestConfigWithStaffSecretsIsPrivate(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, body string
		mode       os.FileMode
		refused    bool
	}{
		{"badges, world-readable", `{"staff_badges": ["STAFF-0001"]}`, 0o644, true},
		{"pin hash, world-readable", `{"staff_pin_bcrypt": "$2y$10$x"}`, 0o604, true},
		{"badges, 0640", `{"staff_badges": ["STAFF-0001"]}`, 0o640, false},
		{"no staff, world-readable", `{"id": "k1"}`, 0o644, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".json")
			if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil { // past the umask
				t.Fatal(err)
			}
			_, err := readConfig(path)
			switch {
			case tc.refused && (err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "chmod 640")):
				t.Fatalf("mode %v: %v; want refused, naming %s and chmod 640", tc.mode, err, path)
			case !tc.refused && err != nil:
				t.Fatalf("mode %v: %v; want taken", tc.mode, err)
			}
		})
	}
}
