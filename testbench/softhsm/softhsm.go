// Package softhsm sets up SoftHSM2 tokens for tests and benchmarks: a
// private configuration file and token directory, and a token initialized
// with softhsm2-util (Debian package softhsm2).
package softhsm

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Modules are the places Debian and others install the library.
var Modules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// ErrMissing says what to install.
var ErrMissing = errors.New("softhsm: SoftHSM2 is not installed; install Debian package softhsm2 (make test does, as root)")

// Module returns the path of libsofthsm2.so.
func Module() (string, error) {
	for _, m := range Modules {
		if _, err := os.Stat(m); err == nil {
			return m, nil
		}
	}
	return "", ErrMissing
}

// Token is an initialized token and the environment that finds it.
type Token struct {
	Module string // library path
	Label  string // token label
	PIN    string // user PIN
	Env    string // SOFTHSM2_CONF=..., for child processes
}

// Setup writes a SoftHSM2 configuration under dir, initializes a token
// labelled label with user PIN pin, and points this process at it (SoftHSM
// reads SOFTHSM2_CONF when the library initializes).
func Setup(dir, label, pin string) (*Token, error) {
	mod, err := Module()
	if err != nil {
		return nil, err
	}
	util, err := exec.LookPath("softhsm2-util")
	if err != nil {
		return nil, ErrMissing
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return nil, fmt.Errorf("softhsm: %w", err)
	}
	env := "SOFTHSM2_CONF=" + conf
	cmd := exec.Command(util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", pin+"-so")
	cmd.Env = append(os.Environ(), env)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("softhsm: init token: %w: %s", err, out)
	}
	if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
		return nil, err
	}
	return &Token{Module: mod, Label: label, PIN: pin, Env: env}, nil
}
