package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The broker password and staff PIN given in the environment are not
// printed by --help or a mistyped flag: they are read after the flags, not
// made the flags' defaults, which the usage text prints.
func TestHelpKeepsSecrets(t *testing.T) {
	if args := os.Getenv("FRANK_KIOSK_TEST_ARGS"); args != "" {
		os.Args = append([]string{"kiosk"}, strings.Fields(args)...)
		os.Exit(run())
	}
	for _, args := range []string{"--no-such-flag", "--help"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelpKeepsSecrets$")
		cmd.Env = append(os.Environ(), "FRANK_KIOSK_TEST_ARGS="+args,
			"FRANK_KIOSK_PASSWORD=BROKER-SECRET-5678", "FRANK_STAFF_PIN=90817263")
		out, _ := cmd.CombinedOutput()
		if !strings.Contains(string(out), "-staff-pin") {
			t.Fatalf("%s printed no help: %s", args, out)
		}
		if strings.Contains(string(out), "BROKER-SECRET-5678") || strings.Contains(string(out), "90817263") {
			t.Errorf("%s printed a secret from the environment:\n%s", args, out)
		}
	}
}
