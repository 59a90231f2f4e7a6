package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/frank-postage/frank/hub/operators"
)

// hub operator token prints only the token on stdout, says on stderr
// that it is read-only and when it expires, and refuses a lifetime of
// zero, below or past a year before opening the hub.
func TestOperatorTokenCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hub")
	t.Setenv("FRANK_OPERATOR_PASSWORD", "operator password 1")
	if code, _, errOut := hubCmd(t, dir, "operator", "add", "ana", "--role", "ops"); code != 0 {
		t.Fatalf("operator add: %d %s", code, errOut)
	}
	code, out, errOut := hubCmd(t, dir, "operator", "token", "ana", "--name", "ci", "--ttl", "30d")
	if code != 0 || !strings.HasPrefix(out, "frk_") || strings.Count(out, "\n") != 1 {
		t.Fatalf("operator token: %d %q %s", code, out, errOut)
	}
	if !strings.Contains(errOut, "read-only") || !strings.Contains(errOut, "expires") {
		t.Errorf("operator token says %q, want read-only and the expiry", errOut)
	}
	if code, _, errOut := hubCmd(t, dir, "operator", "token", "ana", "--write"); code != 0 || !strings.Contains(errOut, "may read and change") {
		t.Errorf("operator token --write: %d %s", code, errOut)
	}
	for ttl, want := range map[string]string{"0": "more than 0", "0d": "more than 0", "-1h": "more than 0", "366d": "at most 365d", "106752d": "at most 365d", "soon": "whole days"} {
		if code, _, errOut := hubCmd(t, dir, "operator", "token", "ana", "--ttl", ttl); code != 2 || !strings.Contains(errOut, want) {
			t.Errorf("--ttl %s: %d %s, want a refusal naming %q", ttl, code, errOut, want)
		}
	}
}

// hub operator token --metrics makes a token that reads /metrics only,
// and says so; with --write it is refused.
func TestOperatorTokenMetrics(t *testing.T) {
	c := newCLI(t)
	t.Setenv("FRANK_OPERATOR_PASSWORD", "operator password 1")
	c.ok("operator", "add", "prometheus", "--role", "ops")
	code, out, errOut := hubCmd(t, c.dir, "operator", "token", "prometheus", "--metrics", "--name", "prometheus")
	if code != 0 || !strings.Contains(errOut, "/metrics only") {
		t.Fatalf("operator token --metrics: %d %q %s", code, out, errOut)
	}
	op, err := operators.New(c.db(), nil).ByToken(context.Background(), strings.TrimSpace(out))
	if err != nil || op.Token.Scope != operators.MetricsOnly {
		t.Fatalf("the token: %+v %v, want scope metrics", op, err)
	}
	c.fails(2, "not both", "operator", "token", "prometheus", "--metrics", "--write")
}
