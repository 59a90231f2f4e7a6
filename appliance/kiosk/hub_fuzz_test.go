package kiosk_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/kiosk"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
)

// What FuzzHubMessages does with its payload, its first argument.
const (
	hubCommand        = iota // delivered on command (onCommand)
	hubConfig                // delivered on config (onConfig), then the real config again
	hubAnswerPrint           // the next four: delivered unasked (onAnswer)
	hubAnswerStock           //
	hubAnswerStaff           //
	hubAnswerPurchase        //
	hubAnswerRefund          //
	hubAnswerUnknown         // on a topic the kiosk never asks on
	hubAwaitStock            // the hub's answer to a stock load, "$ID" its request id
	hubAwaitStaff            // the hub's answer to a staff login, "$ID" its request id
	hubKinds
)

var hubUnasked = map[int]string{hubAnswerPrint: protocol.TopicPrintResult, hubAnswerStock: protocol.TopicStockResult,
	hubAnswerStaff: protocol.TopicStaffResult, hubAnswerPurchase: protocol.TopicPurchaseResult,
	hubAnswerRefund: protocol.TopicRefundResult, hubAnswerUnknown: "nope/result"}

// msgLink is the kiosk's session with a hub that answers stock loads and
// staff logins, in memory. What the kiosk sends is served on a goroutine
// of its own, where first[suffix], if set, is delivered before the hub's
// own answer, in that order: a fuzzed answer the kiosk waits for, which
// the hub's own then follows, so the wait is never long.
type msgLink struct {
	mu      sync.Mutex
	deliver func(string, []byte)
	config  []byte
	first   map[string][]byte
	results chan protocol.CommandResult
	up      atomic.Bool
}

func (l *msgLink) Open(deliver func(string, []byte)) {
	l.mu.Lock()
	l.deliver = deliver
	l.mu.Unlock()
	l.up.Store(true)
	go deliver(protocol.TopicConfig, l.config)
}

func (l *msgLink) Up() bool { return l.up.Load() }
func (l *msgLink) Close()   { l.up.Store(false) }
func (l *msgLink) setFirst(suffix string, b []byte) {
	l.mu.Lock()
	l.first = map[string][]byte{}
	if b != nil {
		l.first[suffix] = b
	}
	l.mu.Unlock()
}

func (l *msgLink) Send(suffix string, payload []byte, _ time.Duration) bool {
	if !l.up.Load() {
		return false
	}
	go l.serve(suffix, slices.Clone(payload))
	return true
}

func (l *msgLink) serve(suffix string, payload []byte) {
	l.mu.Lock()
	deliver, first := l.deliver, l.first[suffix]
	l.mu.Unlock()
	var req struct {
		RequestID string   `json:"request_id"`
		Sheets    []string `json:"sheets"`
	}
	json.Unmarshal(payload, &req)
	var own any
	switch suffix {
	case protocol.TopicCommandResult:
		r, err := protocol.DecodeCommandResult(payload)
		if err != nil {
			r = &protocol.CommandResult{Status: fmt.Sprintf("undecodable %q: %v", payload, err)}
		}
		select {
		case l.results <- *r:
		default:
		}
		return
	case protocol.TopicStock:
		res := protocol.StockResult{RequestID: req.RequestID, Status: protocol.ResultOK}
		for _, sh := range req.Sheets {
			res.Sheets = append(res.Sheets, protocol.SheetState{Sheet: sh, Free: []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}})
		}
		own = res
	case protocol.TopicStaff:
		own = protocol.StaffLoginResult{RequestID: req.RequestID, Status: protocol.ResultRejected,
			Error: protocol.Errorf(protocol.CodeUnauthorized, "no such badge")}
	default:
		return
	}
	if first != nil {
		deliver(suffix+"/result", bytes.ReplaceAll(first, []byte("$ID"), []byte(req.RequestID)))
	}
	b, _ := json.Marshal(own)
	deliver(suffix+"/result", b)
}

// FuzzHubMessages feeds the kiosk what a hub could send it: commands
// (onCommand), configs (onConfig), and answers (onAnswer), both unasked
// and as the answer to a stock load or a staff login the kiosk waits for,
// on one kiosk for the whole run, its messages delivered as MQTT would.
// It never panics; a command for the kiosk is answered, with its id, ok
// or rejected; a config for it is put in force; an awaited answer gives
// the caller a result or an error, not a hang; and after each message the
// kiosk keeps working: its status answers, it is ready, it carries out a
// command from ops and loads stock from the hub.
func FuzzHubMessages(f *testing.F) {
	cfg := protocol.KioskConfig{KioskID: "k1", HeartbeatS: 30, Rates: prototest.Rates, StaffManaged: true, StaffNames: []string{"ann"}}
	cfgJSON, _ := json.Marshal(cfg)
	l := &msgLink{config: cfgJSON, results: make(chan protocol.CommandResult, 64)}
	k := startKiosk(f, kiosk.Config{ID: "k1", Link: l, OriginZIP: "94544", ResendEvery: 200 * time.Millisecond, Deadline: 5 * time.Second},
		&fakePrinter{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	h := k.Handler()

	cmd := func(id, action string) []byte {
		b, _ := json.Marshal(protocol.Command{CommandID: id, KioskID: "k1", Action: action, Message: "back soon", IssuedBy: "ops-ann",
			IssuedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)})
		return b
	}
	for _, a := range append(slices.Clone(protocol.Actions), "self_destruct") {
		f.Add(uint8(hubCommand), cmd("cmd-"+a, a))
	}
	f.Add(uint8(hubCommand), []byte(`{"command_id":"c1","kiosk_id":"k2","action":"lock","issued_by":"x","issued_at":"2026-01-02T03:04:05Z"}`))
	f.Add(uint8(hubCommand), []byte(`{"command_id":"c1","kiosk_id":"k1","action":"update","issued_by":"x","issued_at":"2026-01-02T03:04:05Z",`+
		`"release":{"manifest":"e30=","signature":"AA=="}}`))
	f.Add(uint8(hubConfig), cfgJSON)
	other := cfg
	other.StaffManaged, other.Settings = false, protocol.KioskSettings{RemedyWindowS: 60, Language: "es", LabelsLow: 5}
	b, _ := json.Marshal(other)
	f.Add(uint8(hubConfig), b)
	other.KioskID = "k2"
	b, _ = json.Marshal(other)
	f.Add(uint8(hubConfig), b)
	for kind := range hubUnasked {
		for _, s := range []string{`{"request_id":"r-1","status":"ok"}`, `{"request_id":"r-1","status":"rejected","error":{"code":"internal","message":"x"}}`} {
			f.Add(uint8(kind), []byte(s))
		}
	}
	for _, s := range []string{
		`{"request_id":"$ID","status":"ok","sheets":[{"sheet":"1966-F8CF","free":[1,2,3]}]}`,
		`{"request_id":"$ID","status":"ok","sheets":[{"sheet":"1966-F8CF","free":[-1,0,99,1,1]},{"sheet":"not a sheet","free":[]}]}`,
		`{"request_id":"$ID","status":"rejected","error":{"code":"sheet_unknown","message":"no such sheet"}}`,
		`{"request_id":"$ID","status":"ok","sheets":null}`, `{"request_id":"$ID","status":"maybe"}`,
	} {
		f.Add(uint8(hubAwaitStock), []byte(s))
	}
	for _, s := range []string{
		`{"request_id":"$ID","status":"ok","name":"ann"}`, `{"request_id":"$ID","status":"ok","name":""}`,
		`{"request_id":"$ID","status":"rejected","retry_after_s":30}`, `{"request_id":"$ID","status":"rejected","retry_after_s":-9223372036854775808}`,
		`{"request_id":"$ID","status":"rejected"}`, `{"request_id":"$ID","status":"rejected","error":{"code":"internal"}}`,
	} {
		f.Add(uint8(hubAwaitStaff), []byte(s))
	}
	for _, s := range []string{``, `null`, `[]`, `{`, `{"request_id":1}`, `{"request_id":"$ID","request_id":"x"}`, "\xff",
		`{"request_id":"` + strings.Repeat("r", 1<<12) + `"}`} {
		for kind := range hubKinds {
			f.Add(uint8(kind), []byte(s))
		}
	}

	var live atomic.Int64
	f.Fuzz(func(t *testing.T, kind uint8, payload []byte) {
		for len(l.results) > 0 { // left from an earlier run
			<-l.results
		}
		l.setFirst("", nil)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		switch int(kind) % hubKinds {
		case hubCommand:
			l.deliver(protocol.TopicCommand, payload)
			if c, err := protocol.DecodeCommand(payload); err == nil && c.KioskID == "k1" {
				r := commandAnswer(t, l, c.CommandID)
				if r.KioskID != "k1" || r.Status != protocol.ResultOK && r.Status != protocol.ResultRejected {
					t.Fatalf("command %q answered %+v", payload, r)
				}
			}
		case hubConfig:
			l.deliver(protocol.TopicConfig, payload)
			if c, err := protocol.DecodeKioskConfig(payload); err == nil && c.KioskID == "k1" {
				if rt := k.Rates(); rt == nil || !jsonEqual(*rt, c.Rates) {
					t.Fatalf("config %q: rates in force %+v", payload, rt)
				}
			}
			l.deliver(protocol.TopicConfig, cfgJSON)
		case hubAwaitStock:
			l.setFirst(protocol.TopicStock, payload)
			res, err := k.LoadStock(ctx, []string{"1966-F8CF"})
			if err == nil && (res == nil || res.Status != protocol.ResultOK && res.Status != protocol.ResultRejected) {
				t.Fatalf("stock answer %q: %+v", payload, res)
			}
			if ctx.Err() != nil {
				t.Fatalf("stock answer %q: the load waited for the deadline", payload)
			}
		case hubAwaitStaff:
			l.setFirst(protocol.TopicStaff, payload)
			r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/api/v1/staff/login", strings.NewReader(`{"badge":"STAFF-0001"}`))
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if !json.Valid(w.Body.Bytes()) || ctx.Err() != nil {
				t.Fatalf("staff answer %q: login answered %d %q (%v)", payload, w.Code, w.Body, ctx.Err())
			}
		default:
			l.deliver(hubUnasked[int(kind)%hubKinds], payload)
		}
		l.setFirst("", nil)

		// The kiosk keeps working.
		st := k.Status()
		if !k.Ready() || st.LabelsLeft < 0 || st.Reasons == nil {
			t.Fatalf("after %d %q: status %+v, ready %v", kind, payload, st, k.Ready())
		}
		id := fmt.Sprintf("live-%d", live.Add(1))
		l.deliver(protocol.TopicCommand, cmd(id, protocol.ActionDiagnostics))
		if r := commandAnswer(t, l, id); r.Status != protocol.ResultOK || r.Diagnostics == nil {
			t.Fatalf("after %d %q: diagnostics answered %+v", kind, payload, r)
		}
		if res, err := k.LoadStock(ctx, []string{"1966-F8D0"}); err != nil || res.Status != protocol.ResultOK {
			t.Fatalf("after %d %q: stock load %+v, %v", kind, payload, res, err)
		}
	})
}

// commandAnswer waits for the kiosk's answer to command id.
func commandAnswer(t *testing.T, l *msgLink, id string) protocol.CommandResult {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case r := <-l.results:
			if strings.HasPrefix(r.Status, "undecodable") {
				t.Fatalf("the kiosk answered command %s with %s", id, r.Status)
			}
			if r.CommandID == id {
				return r
			}
		case <-timeout:
			t.Fatalf("no answer to command %s within 10 s", id)
		}
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}
