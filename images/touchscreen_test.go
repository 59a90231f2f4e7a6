package images

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/frank-postage/frank/testbench/wait"
)

// The touchscreen script's watchdog, run on the host with a stand-in for
// Chromium and for the kiosk's local API: a page that never polls is ended
// and the script exits non-zero (systemd starts the screen again); a page
// that polls, or a kiosk service that does not answer, ends nothing.
func TestTouchscreenWatchdog(t *testing.T) {
	need(t, "wget", "wget")
	stale := func(w http.ResponseWriter) { w.Write([]byte(`{"screen":"stale"}`)) }
	for _, tc := range []struct {
		name    string
		screen  func(w http.ResponseWriter)
		systemd bool // run as a unit's process (INVOCATION_ID set)
		restart bool // the script exits for systemd to restart the screen
		again   bool // the script starts the browser again itself
		crash   bool // the browser exits by itself, with status 3
	}{
		{"browser exits by itself", stale, true, false, false, true},
		{"page never polled, under systemd", stale, true, true, false, false},
		{"page never polled, in a desktop session", stale, false, false, true, false},
		{"page polls", func(w http.ResponseWriter) { w.Write([]byte(`{"screen":"live","seen":"2026-12-05T12:00:00Z"}`)) }, true, false, false, false},
		{"kiosk service down", func(w http.ResponseWriter) { w.WriteHeader(http.StatusServiceUnavailable) }, true, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/api/v1/status":
					w.Write([]byte(`{"in_service":true}`))
				case "/api/v1/screen":
					if r.URL.Query().Get("within") != "1" {
						t.Errorf("screen asked %s, want within=1", r.URL.RawQuery)
					}
					asked.Add(1)
					tc.screen(w)
				default:
					http.NotFound(w, r)
				}
			}))
			defer srv.Close()
			dir := t.TempDir()
			args := filepath.Join(dir, "args")
			fake := "#!/bin/sh\necho \"$@\" >> " + args + "\nexec sleep 600\n"
			if tc.crash {
				fake = "#!/bin/sh\necho \"$@\" >> " + args + "\nexit 3\n"
			}
			if err := os.WriteFile(filepath.Join(dir, "chromium"), []byte(fake), 0o755); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("sh", "kiosk/usr/share/frank-kiosk/touchscreen")
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "INVOCATION_ID=") {
					cmd.Env = append(cmd.Env, kv)
				}
			}
			cmd.Env = append(cmd.Env, "PATH="+dir+":"+os.Getenv("PATH"), "FRANK_KIOSK_URL="+srv.URL+"/",
				"FRANK_SCREEN_WATCHDOG_S=1", "FRANK_SCREEN_WATCHDOG_EVERY_S=1")
			if tc.systemd {
				cmd.Env = append(cmd.Env, "INVOCATION_ID=0123456789abcdef0123456789abcdef")
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			defer cmd.Process.Kill()
			wait.For(t, 30*time.Second, "the browser started on the kiosk's page", func() bool {
				b, _ := os.ReadFile(args)
				return strings.Contains(string(b), "--kiosk") && strings.Contains(string(b), srv.URL+"/")
			})
			if tc.crash {
				// Under cage the script's exit ends the screen, and the
				// unit starts it again at once.
				select {
				case err := <-exited:
					var ee *exec.ExitError
					if !errors.As(err, &ee) || ee.ExitCode() != 3 || strings.Contains(stderr.String(), "has not polled") {
						t.Fatalf("script ended with %v, %q; want the browser's status 3, at once", err, stderr.String())
					}
				case <-time.After(30 * time.Second):
					t.Fatal("the script outlived its browser")
				}
				return
			}
			if tc.restart {
				select {
				case err := <-exited:
					if err == nil || !strings.Contains(stderr.String(), "has not polled the kiosk") {
						t.Fatalf("script ended with %v, %q; want a failure that says why", err, stderr.String())
					}
				case <-time.After(time.Minute):
					t.Fatal("the watchdog did not end a browser whose page never polled")
				}
				return
			}
			if tc.again {
				wait.For(t, time.Minute, "the browser started again", func() bool {
					b, _ := os.ReadFile(args)
					return strings.Count(string(b), "--kiosk") >= 2
				})
			} else {
				wait.For(t, 30*time.Second, "the watchdog to ask three times", func() bool { return asked.Load() >= 3 })
			}
			select {
			case err := <-exited:
				t.Fatalf("the script ended (%v, %q), though %s", err, stderr.String(), tc.name)
			default:
			}
			// systemd stopping the screen: the browser ends with the script.
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				t.Fatal("the script did not end on SIGTERM")
			}
		})
	}
}
