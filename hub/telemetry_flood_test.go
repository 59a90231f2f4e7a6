package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/front"
	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// hubLog is what a hub logged.
type hubLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *hubLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// lines returns the logged lines that contain all of words.
func (l *hubLog) lines(words ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.buf.String(), "\n") {
		ok := line != ""
		for _, w := range words {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// longest is the longest line logged.
func (l *hubLog) longest() int {
	n := 0
	for _, line := range l.lines() {
		n = max(n, len(line))
	}
	return n
}

// restartLogging restarts the env's hub on the same database and config,
// logging into the returned log.
func (e *env) restartLogging() *hubLog {
	e.t.Helper()
	e.h.Close()
	l := &hubLog{}
	ctx := context.Background()
	h, err := hub.Open(ctx, e.cfg, slog.New(slog.NewTextHandler(l, nil)))
	if err != nil {
		e.t.Fatal(err)
	}
	if err := h.Start(ctx); err != nil {
		h.Close()
		e.t.Fatal(err)
	}
	e.h = h
	e.t.Cleanup(func() { h.Close() })
	return l
}

func (e *env) kioskAlertRows(ctx context.Context) (rows, bytes int64) {
	e.t.Helper()
	db := e.openDB()
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(LENGTH(message)), 0) FROM alerts WHERE subject = 'kiosk/kiosk-1'`).Scan(&rows, &bytes); err != nil {
		e.t.Fatal(err)
	}
	return rows, bytes
}

// A kiosk whose heartbeats alternate between "paper out, printer jammed,
// door open" and all clear (a loose sensor, or a stolen kiosk's
// credentials in a loop) keeps one alert of each kind, reopened, and the
// hub logs the flapping a few times, not at each flip (the audit's churn:
// 100 heartbeats made 200 rows and as many WARN lines).
func TestFlappingHeartbeatsKeepOneAlertEach(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	logs := e.restartLogging()
	k := e.kiosk("kiosk-1")
	ctx := context.Background()
	base := e.clock.Now()
	const beats = 41 // the last one raises
	for i := range beats {
		tm := protocol.Telemetry{KioskID: "kiosk-1", At: base.Add(time.Duration(i) * 100 * time.Millisecond), Firmware: "x",
			LabelsLeft: 500, Paper: "ok", Printer: "ok", Scale: "ok", Sales: int64(i), InService: true}
		if i%2 == 0 {
			tm.Paper, tm.Printer, tm.InService, tm.Reasons = "out", "jam", false, []string{"paper_out", "printer_fault", "door_open"}
		}
		b, _ := json.Marshal(tm)
		// 41 heartbeats fit the kiosk's burst of 200 messages.
		k.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicTelemetry), 1, false, b).WaitTimeout(5 * time.Second)
	}
	// Heartbeats are judged in the order of their times: once the last
	// is, any earlier one still in flight is stale.
	wait.For(t, 10*time.Second, "the last heartbeat judged", func() bool {
		as, _ := e.h.Alerts().List(ctx, true)
		n := 0
		for _, a := range as {
			if a.Subject == "kiosk/kiosk-1" {
				n++
			}
		}
		last := false
		for _, tm := range e.h.Presence().History("kiosk-1") {
			last = last || tm.Sales == beats-1
		}
		return n == 3 && last
	})
	rows, size := e.kioskAlertRows(ctx)
	if rows != 3 {
		t.Errorf("%d flips made %d alert rows (%d bytes), want 3: paper_out, printer_fault, door_open", beats-1, rows, size)
	}
	raised, cleared := logs.lines("msg=ALERT", "subject=kiosk/kiosk-1"), logs.lines(`msg="alert cleared"`, "subject=kiosk/kiosk-1")
	if len(raised)+len(cleared) > 9 { // each kind: raised, cleared, and reopened once
		t.Errorf("%d flips logged %d raises and %d clears", beats-1, len(raised), len(cleared))
	}
}

// The audit's heartbeat, paper out with a 60 KB printer state, is refused
// as a whole: no alert, and nothing of it in the log. A 60 KB status
// payload is logged by its length and first bytes.
func TestOversizeKioskTextNotStoredOrLogged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	logs := e.restartLogging()
	k := e.kiosk("kiosk-1")
	ctx := context.Background()
	junk := strings.Repeat("P", 60_000)
	tm := protocol.Telemetry{KioskID: "kiosk-1", At: e.clock.Now(), Firmware: "x", LabelsLeft: 500, Paper: "out", Printer: junk, Scale: "ok", Reasons: []string{"door_open"}}
	b, _ := json.Marshal(tm)
	k.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicTelemetry), 1, false, b).WaitTimeout(5 * time.Second)
	k.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicStatus), 1, false, []byte(junk)).WaitTimeout(5 * time.Second)
	wait.For(t, 10*time.Second, "the status logged", func() bool { return len(logs.lines(`msg="kiosk status"`, "kiosk=kiosk-1", "PPPP")) > 0 })
	// A heartbeat the hub takes after it: the junk one was judged before.
	tm.Printer, tm.At = "ok", tm.At.Add(time.Second)
	b, _ = json.Marshal(tm)
	k.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicTelemetry), 1, false, b).WaitTimeout(5 * time.Second)
	wait.For(t, 10*time.Second, "the valid heartbeat's alert", func() bool {
		as, _ := e.h.Alerts().List(ctx, true)
		return len(as) == 2
	})
	if l := logs.lines("bad telemetry", "invalid_request"); len(l) != 1 {
		t.Errorf("the junk heartbeat was not refused as invalid_request: %q", l)
	}
	if rows, size := e.kioskAlertRows(ctx); rows != 2 || size > 200 {
		t.Errorf("alert rows %d of %d bytes, want the valid heartbeat's paper_out and door_open", rows, size)
	}
	if n := logs.longest(); n > 1000 {
		t.Errorf("the hub logged a %d-byte line", n)
	}
}

// A kiosk's refused messages write at most front.KioskLines lines a
// minute to the log, and the next line says how many were left out; every
// refusal is still answered and counted, and another kiosk's lines are
// its own. Before, a stolen kiosk wrote a line for each, 20 a second
// within its message budget, enough for journald to drop the hub's other
// lines.
func TestKioskRefusalsLogBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	logs := e.restartLogging()
	k1, k2 := e.kiosk("kiosk-1"), e.kiosk("kiosk-2")
	const sent = 60
	for i := range sent {
		// Priced on a table that is not in force: rate_table_stale.
		res := decode(t, k1.ask(purchase(fmt.Sprintf("stale-%d", i), "kiosk-1", "1966-F8CF-01", func(r *protocol.PurchaseRequest) { r.RateTable = "usps-1999" })))
		if res.Error == nil || res.Error.Code != protocol.CodeRateTableStale {
			t.Fatalf("purchase %d: %+v", i, res)
		}
	}
	if n := len(logs.lines("purchase rejected", "kiosk=kiosk-1")); n != front.KioskLines {
		t.Fatalf("%d refusals wrote %d lines, want %d", sent, n, front.KioskLines)
	}
	if res := decode(t, k2.ask(purchase("stale-k2", "kiosk-2", "2222-0001-01", func(r *protocol.PurchaseRequest) { r.RateTable = "usps-1999" }))); res.Error == nil {
		t.Fatalf("kiosk-2's purchase: %+v", res)
	}
	// Logged just after the answer is sent.
	wait.For(t, 10*time.Second, "kiosk-2's refusal logged", func() bool { return len(logs.lines("purchase rejected", "kiosk=kiosk-2")) == 1 })
	e.clock.Set(e.clock.Now().Add(front.LineWindow))
	decode(t, k1.ask(purchase("stale-next", "kiosk-1", "1966-F8CF-01", func(r *protocol.PurchaseRequest) { r.RateTable = "usps-1999" })))
	wait.For(t, 10*time.Second, fmt.Sprintf("the next minute's first line saying %d were left out", sent-front.KioskLines), func() bool {
		return len(logs.lines("purchase rejected", "kiosk=kiosk-1", fmt.Sprintf("lines_left_out=%d", sent-front.KioskLines))) == 1
	})
	if n := len(logs.lines("purchase rejected", "kiosk=kiosk-1")); n != front.KioskLines+1 {
		t.Fatalf("kiosk-1's lines: %d, want %d", n, front.KioskLines+1)
	}
	// Each refusal is still counted.
	if _, err := e.h.Operators().Add(context.Background(), "prometheus", "operator password 1", "ops", nil); err != nil {
		t.Fatal(err)
	}
	tok, err := e.h.Operators().NewToken(context.Background(), "prometheus", "scrape", operators.ReadOnly, operators.DefaultTokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`frank_rejections_total{code="rate_table_stale"} %d`, sent+2)
	if st, _, body := e.browser().do("GET", "/metrics", nil, "Authorization", "Bearer "+tok); st != http.StatusOK || !strings.Contains(body, want) {
		t.Fatalf("/metrics: %d, no %q", st, want)
	}
}
