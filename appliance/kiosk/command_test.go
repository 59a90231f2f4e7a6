package kiosk_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/kiosk"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// command sends a command from the fake hub and returns the kiosk's answer.
func (fh *fakeHub) command(t *testing.T, id, action, message string) protocol.CommandResult {
	t.Helper()
	fh.link.push(protocol.TopicCommand, protocol.Command{CommandID: id, KioskID: "k1", Action: action, Message: message,
		IssuedBy: "ops-ann", IssuedAt: time.Now().UTC()})
	return fh.commandResult(t)
}

func (fh *fakeHub) commandResult(t *testing.T) protocol.CommandResult {
	t.Helper()
	select {
	case r := <-fh.commands:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to the command within 10 s")
		return protocol.CommandResult{}
	}
}

func TestRemoteCommands(t *testing.T) {
	ring := kiosk.NewLogRing(50)
	restarts := make(chan struct{}, 4)
	fh := &fakeHub{answer: vectorAnswer, journal: openJournal(t), commands: make(chan protocol.CommandResult, 8)}
	k, _ := setupWith(t, fh, func(c *kiosk.Config) {
		c.Logs, c.Firmware = ring, "1.2.3"
		c.Restart = func() { restarts <- struct{}{} }
	})
	// The kiosk's own log goes to the ring too, as cmd/kiosk joins them.
	slog.New(ring.Handler()).Info("kiosk running", "version", "1.2.3")
	ctx := context.Background()

	t.Run("out of service and back", func(t *testing.T) {
		r := fh.command(t, "cmd-oos", protocol.ActionOutOfService, "Back at 2 pm")
		if r.Status != protocol.ResultOK || r.CommandID != "cmd-oos" {
			t.Fatalf("result %+v", r)
		}
		st := k.Status()
		if st.InService || !slices.Contains(st.Reasons, "ops_out_of_service") || st.Message != "Back at 2 pm" {
			t.Fatalf("status %+v", st)
		}
		if _, err := k.Sell(ctx, order("1966-F8CF-01")); protocol.AsError(err).Code != protocol.CodeServiceUnavailable {
			t.Fatalf("sale while out of service: %v", err)
		}
		// Staff cannot override ops.
		k.SetInService(true)
		if !opsHold(k.Status()) {
			t.Fatal("staff put back in service a kiosk ops took out")
		}
		// A repeat is answered with the first result and not carried out again.
		fh.link.push(protocol.TopicCommand, protocol.Command{CommandID: "cmd-oos", KioskID: "k1", Action: protocol.ActionOutOfService,
			Message: "another message", IssuedBy: "ops-ann", IssuedAt: time.Now().UTC()})
		if again := fh.commandResult(t); !again.At.Equal(r.At) || k.Status().Message != "Back at 2 pm" {
			t.Fatalf("repeat carried out again: %+v, message %q", again, k.Status().Message)
		}
		if r := fh.command(t, "cmd-back", protocol.ActionInService, ""); r.Status != protocol.ResultOK {
			t.Fatalf("result %+v", r)
		}
		if st := k.Status(); opsHold(st) || st.Message != "" {
			t.Fatalf("status after in_service: %+v", st)
		}
	})

	t.Run("lock", func(t *testing.T) {
		if r := fh.command(t, "cmd-lock", protocol.ActionLock, "Call ops"); r.Status != protocol.ResultOK {
			t.Fatalf("result %+v", r)
		}
		if st := k.Status(); st.InService || !slices.Contains(st.Reasons, "locked") {
			t.Fatalf("status %+v", st)
		}
		rec := httptest.NewRecorder()
		k.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/api/v1/staff/login", strings.NewReader(`{"badge":"STAFF-1"}`)))
		if rec.Code != http.StatusLocked || !strings.Contains(rec.Body.String(), string(protocol.CodeKioskLocked)) {
			t.Fatalf("staff login on a locked kiosk: %d %s", rec.Code, rec.Body)
		}
		// The lock outlives a restart: a kiosk on the same journal starts locked.
		fh2 := &fakeHub{answer: vectorAnswer, journal: fh.journal, commands: make(chan protocol.CommandResult, 8)}
		k2, _ := setup(t, fh2)
		if st := k2.Status(); !slices.Contains(st.Reasons, "locked") || st.Message != "Call ops" {
			t.Fatalf("after a restart: %+v", st)
		}
		if r := fh.command(t, "cmd-unlock", protocol.ActionUnlock, ""); r.Status != protocol.ResultOK {
			t.Fatalf("result %+v", r)
		}
		if st := k.Status(); opsHold(st) {
			t.Fatalf("status after unlock: %+v", st)
		}
	})

	t.Run("diagnostics", func(t *testing.T) {
		r := fh.command(t, "cmd-diag", protocol.ActionDiagnostics, "")
		d := r.Diagnostics
		if r.Status != protocol.ResultOK || d == nil {
			t.Fatalf("result %+v", r)
		}
		if d.Firmware != "1.2.3" || d.GoVersion == "" || d.Arch == "" || !d.Ready || d.Printer != "ok" {
			t.Fatalf("diagnostics %+v", d)
		}
		if !slices.ContainsFunc(d.Log, func(l string) bool { return strings.Contains(l, "kiosk running") }) {
			t.Fatalf("log %q", d.Log)
		}
	})

	t.Run("resync stock", func(t *testing.T) {
		if _, err := k.LoadStock(ctx, []string{"1966-F8D0"}); err != nil {
			t.Fatal(err)
		}
		r := fh.command(t, "cmd-stock", protocol.ActionResyncStock, "")
		if r.Status != protocol.ResultOK || r.LabelsLeft == nil || *r.LabelsLeft != k.LabelsLeft() || *r.LabelsLeft == 0 {
			t.Fatalf("result %+v, labels left %d", r, k.LabelsLeft())
		}
	})

	t.Run("an action this kiosk does not know", func(t *testing.T) {
		r := fh.command(t, "cmd-new", "reticulate_splines", "")
		if r.Status != protocol.ResultRejected || r.Error == nil || r.Error.Code != protocol.CodeInvalidRequest {
			t.Fatalf("result %+v", r)
		}
	})

	t.Run("restart, once", func(t *testing.T) {
		if r := fh.command(t, "cmd-restart", protocol.ActionRestart, ""); r.Status != protocol.ResultOK {
			t.Fatalf("result %+v", r)
		}
		select {
		case <-restarts:
		case <-time.After(5 * time.Second):
			t.Fatal("not restarted")
		}
		// The restarted kiosk hears the command again (its answer was
		// lost): it answers and does not restart again.
		fh2 := &fakeHub{answer: vectorAnswer, journal: fh.journal, commands: make(chan protocol.CommandResult, 8)}
		setupWith(t, fh2, func(c *kiosk.Config) { c.Restart = func() { restarts <- struct{}{} } })
		if r := fh2.command(t, "cmd-restart", protocol.ActionRestart, ""); r.Status != protocol.ResultOK {
			t.Fatalf("result %+v", r)
		}
		select {
		case <-restarts:
			t.Fatal("restarted twice for one command")
		default:
		}
	})
}

// A command never cuts a sale short: a lock that arrives mid-print waits
// for the sale to end, and the customer gets their stamp.
func TestCommandWaitsForTheSale(t *testing.T) {
	fh := &fakeHub{answer: vectorAnswer, commands: make(chan protocol.CommandResult, 4)}
	k, p := setup(t, fh)
	p.hold = make(chan struct{})
	done := make(chan error, 1)
	go func() {
		rc, err := k.Sell(context.Background(), order("1966-F8CF-01"))
		if err == nil && rc.Status != protocol.ResultOK {
			err = protocol.Errorf(protocol.CodeInternal, "receipt %+v", rc)
		}
		done <- err
	}()
	wait.For(t, 10*time.Second, "the sale to print", func() bool { return k.Progress().Step == "printing" })
	fh.link.push(protocol.TopicCommand, protocol.Command{CommandID: "cmd-lock", KioskID: "k1", Action: protocol.ActionLock,
		IssuedBy: "ops-ann", IssuedAt: time.Now().UTC()})
	select {
	case r := <-fh.commands:
		t.Fatalf("lock carried out mid-sale: %+v", r)
	case <-time.After(300 * time.Millisecond):
	}
	close(p.hold)
	if err := <-done; err != nil {
		t.Fatalf("the sale in hand: %v", err)
	}
	if r := fh.commandResult(t); r.Status != protocol.ResultOK || !slices.Contains(k.Status().Reasons, "locked") {
		t.Fatalf("lock after the sale: %+v, status %+v", r, k.Status())
	}
}

// A kiosk ignores a command for another kiosk, and one it cannot read.
func TestBadCommandsIgnored(t *testing.T) {
	fh := &fakeHub{answer: vectorAnswer, commands: make(chan protocol.CommandResult, 4)}
	k, _ := setup(t, fh)
	fh.link.push(protocol.TopicCommand, protocol.Command{CommandID: "cmd-x", KioskID: "k2", Action: protocol.ActionLock,
		IssuedBy: "ops-ann", IssuedAt: time.Now().UTC()})
	fh.link.pushRaw(protocol.TopicCommand, []byte(`{"command_id":"cmd-y","kiosk_id":"k1","action":"lock","issued_by":"x","issued_at":"2026-01-01T00:00:00Z","issued_at":"2026-01-01T00:00:00Z"}`))
	// A field from a newer hub is fine.
	b, _ := json.Marshal(map[string]any{"command_id": "cmd-z", "kiosk_id": "k1", "action": "diagnostics", "issued_by": "ops-ann",
		"issued_at": time.Now().UTC(), "priority": "high"})
	fh.link.pushRaw(protocol.TopicCommand, b)
	if r := fh.commandResult(t); r.CommandID != "cmd-z" || r.Status != protocol.ResultOK {
		t.Fatalf("result %+v", r)
	}
	if opsHold(k.Status()) || len(fh.commands) > 0 {
		t.Fatalf("a bad command was carried out: %+v", k.Status())
	}
}

// opsHold says whether ops hold the kiosk out of service or locked.
func opsHold(st kiosk.Status) bool {
	return slices.Contains(st.Reasons, "locked") || slices.Contains(st.Reasons, "ops_out_of_service")
}
