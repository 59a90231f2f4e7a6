package console

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/protocol"
)

// fuzzReadJSON decodes body into a T as an operator API handler does,
// through readJSON, and holds what every such body must: a body taken
// re-encodes to one that decodes to the same value, and writes no answer;
// a body refused is answered 400 invalid_request, and that answer echoes
// no card number (a key or a number JSON could not take is never one, yet
// the operator's text may carry one).
func fuzzReadJSON[T comparable](t *testing.T, body []byte) {
	decode := func(b []byte) (T, *httptest.ResponseRecorder, bool) {
		var v T
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/api/v1/x", bytes.NewReader(b))
		ok := readJSON(w, r, &v)
		return v, w, ok
	}
	v, w, ok := decode(body)
	if !ok {
		e := protocol.DecodeHTTPError(w.Body.Bytes())
		if w.Code != http.StatusBadRequest || e == nil || e.Code != protocol.CodeInvalidRequest {
			t.Fatalf("%q refused with %d %s", body, w.Code, w.Body)
		}
		if protocol.HasCardNumber(e.Message) {
			t.Fatalf("%q: the refusal echoes a card number: %s", body, e.Message)
		}
		return
	}
	if w.Body.Len() != 0 {
		t.Fatalf("%q taken, yet answered %d %s", body, w.Code, w.Body)
	}
	re, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("%q taken as %+v, which does not encode: %v", body, v, err)
	}
	if v2, w2, ok := decode(re); !ok || v2 != v {
		t.Fatalf("%q -> %+v -> %s -> %+v (%s)", body, v, re, v2, w2.Body)
	}
}

// The operator API's command body (POST /kiosks/{id}/commands, apiCommand).
func FuzzAPICommandBody(f *testing.F) {
	f.Add([]byte(`{"action":"reboot","message":""}`))
	f.Add([]byte(`{"action":"message","message":"Back in 5 minutes"}`))
	f.Add([]byte(`{"action":"reboot","action":"drain"}`))
	f.Add([]byte(`{"action":"reboot"} {}`))
	f.Add([]byte(`{"Action":"reboot","note":"x"}`))
	f.Add([]byte(`{"action":1}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzReadJSON[struct {
			Action  string `json:"action"`
			Message string `json:"message"`
		}](t, body)
	})
}

// The kiosk settings body (PUT .../settings, apiSetSettings). Ranges are
// Config.Set's to check, so only the decode is held here.
func FuzzAPIKioskSettingsBody(f *testing.F) {
	f.Add([]byte(`{"remedy_window_s":300,"idle_timeout_s":60,"language":"es","labels_low":50,"paper_alert":"near_end","heartbeat_s":30}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"idle_timeout_s":1e3}`))
	f.Add([]byte(`{"labels_low":-1,"LABELS_LOW":2}`))
	f.Add([]byte(`{"heartbeat_s":30.5}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzReadJSON[protocol.KioskSettings](t, body)
	})
}

// The staff body (POST /stores/{id}/staff, apiAddStaff).
func FuzzAPIStaffBody(f *testing.F) {
	f.Add([]byte(`{"name":"Ann Smith","pin":"1357"}`))
	f.Add([]byte(`{"name":"Bob","badge":"STAFF-BOB7"}`))
	f.Add([]byte(`{"name":"Bob","pin":1357}`))
	f.Add([]byte(`{"name":"Bob","pin":"1357","pin":"2468"}`))
	f.Add([]byte(`{"name":"Bob","badge":"\u00e9","extra":true}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzReadJSON[struct {
			Name  string `json:"name"`
			PIN   string `json:"pin"`
			Badge string `json:"badge"`
		}](t, body)
	})
}

// A time in a search, export or shift query is typed by an operator.
// parseWhen takes "" as no time; whatever else it takes is a time it reads
// back the same from its RFC 3339 form; what it refuses is invalid_request,
// without echoing a card number (no time is one).
func FuzzParseWhen(f *testing.F) {
	for _, s := range []string{"", "2026-12-07", " 2026-12-07 ", "2026-12-07T15:04", "2026-12-07T15:04:05",
		"2026-12-07T15:04:05.123456789+05:30", "2026-12-07T15:04:05Z", "9999-12-31", "2026-02-30", "yesterday"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, end bool) {
		tm, err := parseWhen(s, end)
		if err != nil {
			if e := protocol.AsError(err); e.Code != protocol.CodeInvalidRequest || protocol.HasCardNumber(e.Message) {
				t.Fatalf("%q refused with %v", s, err)
			}
			if !tm.IsZero() {
				t.Fatalf("%q refused, yet read as %v", s, tm)
			}
			return
		}
		if tm.IsZero() != (strings.TrimSpace(s) == "") {
			t.Fatalf("%q read as %v", s, tm)
		}
		if tm.IsZero() || tm.Year() > 9999 { // the day after 9999-12-31 has no RFC 3339 form
			return
		}
		back, err := parseWhen(tm.Format(time.RFC3339Nano), end)
		if err != nil || !back.Equal(tm) {
			t.Fatalf("%q -> %v -> %v, %v", s, tm, back, err)
		}
	})
}

type fuzzKiosks []fleet.Kiosk

func (k fuzzKiosks) List(context.Context) ([]fleet.Kiosk, error) { return k, nil }

// The search and export filter comes from the query string. Held: it never
// panics; a refusal is invalid_request or forbidden; what it takes stays in
// what the operator may see (staff: only their stores, and a kiosk only if
// it is in one of them), with from before to, each as parseWhen reads it.
func FuzzSearchFilter(f *testing.F) {
	for _, q := range []string{"", "store=store-a", "store=store-b", "kiosk=kiosk-1", "kiosk=kiosk-2", "kiosk=nobody",
		"store=store-a&kiosk=kiosk-2", "from=2026-12-01&to=2026-12-07", "from=2026-12-07&to=2026-12-07", "from=2026-12-08&to=2026-12-07",
		"from=x", "to=2026-12-07T10:00", "store=%20store-a%20&store=store-b", "store=%zz", "kiosk=%20kiosk-1;from=1"} {
		f.Add(q, false)
		f.Add(q, true)
	}
	c := &Console{Kiosks: fuzzKiosks{{ID: "kiosk-1", Store: "store-a"}, {ID: "kiosk-2", Store: "store-b"}}}
	f.Fuzz(func(t *testing.T, query string, ops bool) {
		op := &operators.Operator{Login: "sue", Role: operators.RoleStaff, Stores: []string{"store-a"}}
		if ops {
			op = &operators.Operator{Login: "olga", Role: operators.RoleOps}
		}
		r := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/api/v1/search", RawQuery: query}}
		flt, err := c.filter(context.Background(), r, op)
		if err != nil {
			if code := protocol.AsError(err).Code; code != protocol.CodeInvalidRequest && code != protocol.CodeForbidden {
				t.Fatalf("%q refused with %v", query, err)
			}
			return
		}
		if !op.Ops() {
			if flt.All || len(flt.Stores) == 0 || slices.ContainsFunc(flt.Stores, func(s string) bool { return !op.MaySee(s) }) {
				t.Fatalf("%q: staff of store-a given %+v", query, flt)
			}
			if flt.Kiosk != "" {
				st, _ := c.kioskStore(context.Background(), flt.Kiosk)
				if !op.MaySee(st) {
					t.Fatalf("%q: staff of store-a given kiosk %q of %q", query, flt.Kiosk, st)
				}
			}
		}
		q := r.URL.Query()
		from, ferr := parseWhen(q.Get("from"), false)
		to, terr := parseWhen(q.Get("to"), true)
		if ferr != nil || terr != nil || !flt.From.Equal(from) || !flt.To.Equal(to) {
			t.Fatalf("%q: from %v to %v, parseWhen says %v %v, %v %v", query, flt.From, flt.To, from, to, ferr, terr)
		}
		if !flt.From.IsZero() && !flt.To.IsZero() && !flt.From.Before(flt.To) {
			t.Fatalf("%q: from %v not before to %v", query, flt.From, flt.To)
		}
	})
}
