package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestApplyConfig(t *testing.T) {
	newFlags := func() (*flag.FlagSet, *string, *int, *bool) {
		fs := flag.NewFlagSet("hub", flag.ContinueOnError)
		return fs, fs.String("data", "var/hub", ""), fs.Int("workers", 0, ""), fs.Bool("secure-cookies", false, "")
	}
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "hub.json")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fs, data, workers, secure := newFlags()
	fs.Parse([]string{"--workers", "3"})
	if err := applyConfig(fs, write(`{"#": "a comment", "data": "/srv/hub", "workers": 2, "secure-cookies": true}`)); err != nil {
		t.Fatal(err)
	}
	if *data != "/srv/hub" || *workers != 3 || !*secure {
		t.Fatalf("data %q workers %d secure %v: the file sets data and secure-cookies, the command line wins for workers", *data, *workers, *secure)
	}
	for body, want := range map[string]string{
		`{"dta": "x"}`:             `unknown setting "dta"`,
		`{"workers": "many"}`:      "workers",
		`{"data": ["a"]}`:          "want a string",
		`{"config": "x.json"}`:     "unknown setting",
		`{"data": "x"} trailing`:   "trailing",
		`not json`:                 "config",
		`{"pkcs11-pin": "1234"}`:   "FRANK_PKCS11_PIN",
		`{"broker-password": "x"}`: "FRANK_BROKER_PASSWORD",
	} {
		fs, _, _, _ := newFlags()
		fs.String("pkcs11-pin", "", "")
		fs.String("broker-password", "", "")
		err := applyConfig(fs, write(body))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", body, err, want)
		}
	}
}

// Every flag is defined once: a name used twice panics at start.
func TestFlagsParse(t *testing.T) {
	if code := run([]string{"--version"}); code != 0 {
		t.Fatalf("hub --version exited %d", code)
	}
}
