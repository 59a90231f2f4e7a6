package main

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
)

// capture runs the command and returns what it printed to stderr.
func capture(t *testing.T, args ...string) (int, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = w
	code := run(args)
	w.Close()
	os.Stderr = old
	var b bytes.Buffer
	io.Copy(&b, r)
	return code, b.String()
}

// Each subcommand has its own flags and help; the server's help lists the
// server's flags and none of the subcommands'.
func TestSubcommandFlags(t *testing.T) {
	_, serve := capture(t, "serve", "--help")
	for _, want := range []string{"-https", "-data", "-hsm"} {
		if !strings.Contains(serve, want) {
			t.Errorf("hub serve --help lacks %s", want)
		}
	}
	for _, not := range []string{"-sheets", "-badge", "-max-failures", "-enroll-ttl"} {
		if strings.Contains(serve, not) {
			t.Errorf("hub serve --help lists the subcommand flag %s", not)
		}
	}
	_, issue := capture(t, "stock", "issue", "--help")
	if !strings.Contains(issue, "usage: hub stock issue --store S --sheets N") || !strings.Contains(issue, "-sheets") || strings.Contains(issue, "-badge") || strings.Contains(issue, "-https") {
		t.Errorf("hub stock issue --help:\n%s", issue)
	}
	if code, out := capture(t, "stock", "issue", "--badge", "x"); code != 2 || !strings.Contains(out, "flag provided but not defined: -badge") {
		t.Errorf("a flag of another command: %d %s", code, out)
	}
	for cmd := range usageOf {
		if _, out := capture(t, append(strings.Fields(cmd), "--help")...); !strings.Contains(out, "usage: hub "+cmd) {
			t.Errorf("hub %s --help: %s", cmd, out)
		}
	}
}

// The HSM PIN and the broker password given in the environment are not
// printed by --help or a mistyped flag, as they were when they stood as
// the flags' defaults.
func TestHelpKeepsSecrets(t *testing.T) {
	t.Setenv("FRANK_PKCS11_PIN", "PIN-SECRET-1234")
	t.Setenv("FRANK_BROKER_PASSWORD", "BROKER-SECRET-5678")
	for _, args := range [][]string{{"--no-such-flag"}, {"--help"}} {
		_, out := capture(t, args...)
		if !strings.Contains(out, "pkcs11-pin") {
			t.Fatalf("%v printed no help: %s", args, out)
		}
		if strings.Contains(out, "PIN-SECRET-1234") || strings.Contains(out, "BROKER-SECRET-5678") {
			t.Errorf("%v printed a secret from the environment", args)
		}
	}
}

// --kiosk-cert-ttl takes an hour to 397 days (browsers' limit for a
// certificate); outside that the configuration is refused, and the hub
// refuses to start.
func TestKioskCertTTLRange(t *testing.T) {
	// No licence: were the range not checked, serve would stop at the
	// licence rather than run.
	t.Setenv("FRANK_LICENCE", "")
	for ttl, ok := range map[string]bool{"1h": true, "720h": true, "9528h": true, "59m": false, "9529h": false} {
		code, out := capture(t, "--check-config", "--data", t.TempDir(), "--kiosk-cert-ttl", ttl)
		if refused := strings.Contains(out, "kiosk-cert-ttl: want an hour to 397 days"); (code == 0) != ok || refused == ok {
			t.Errorf("--check-config --kiosk-cert-ttl %s: exit %d %s", ttl, code, out)
		}
	}
	code, out := capture(t, "serve", "--data", t.TempDir(), "--kiosk-cert-ttl", "30m")
	if code != 2 || !strings.Contains(out, "bad configuration") || !strings.Contains(out, "kiosk-cert-ttl") {
		t.Errorf("serve --kiosk-cert-ttl 30m: exit %d %s", code, out)
	}
}
