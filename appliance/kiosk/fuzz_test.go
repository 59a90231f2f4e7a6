package kiosk_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/kiosk"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
)

// apiRoute is a route of the local API that reads a JSON body, and what
// its handler decodes the body into.
type apiRoute struct {
	path  string
	staff bool // needs a staff login
	body  func() any
}

var apiRoutes = []apiRoute{
	{"/api/v1/staff/login", false, func() any { return &struct{ PIN, Badge string }{} }},
	{"/api/v1/sales/r-1/reprint", false, func() any { return &struct{ Label string }{} }},
	{"/api/v1/sales/r-1/refund", false, func() any { return &struct{ Label string }{} }},
	{"/api/v1/sales/r-1/receipt", false, func() any { return &struct{ Language string }{} }},
	{"/api/v1/sales", false, func() any { return &kiosk.Order{} }},
	{"/api/v1/staff/stock", true, func() any { return &struct{ Sheets []string }{} }},
	{"/api/v1/staff/service", true, func() any {
		return &struct {
			InService bool `json:"in_service"`
		}{}
	}},
	{"/api/v1/staff/calibrate", true, func() any {
		return &struct {
			KnownMg int64 `json:"known_mg"`
		}{}
	}},
}

// FuzzAPIBody posts fuzzed bodies to the routes of the kiosk's local API
// that read one (decodeBody), on one kiosk with a fake hub for the whole
// run. A body that does not decode as the route's (one object, known
// fields, no key twice, at most 16 KiB) is answered 4xx in the one error
// shape, {"error": {"code": ...}}, with the decoder's own code; any answer
// is JSON, and none is a 500 (a panic the router recovered, or an
// untyped error). An order that decodes and validates is not sent: it
// would be a sale, not a body to decode.
func FuzzAPIBody(f *testing.F) {
	fh := &fakeHub{answer: vectorAnswer}
	fh.prints = make(chan protocol.PrintReport, 64)
	fh.refunds = make(chan protocol.RefundRequest, 16)
	fh.link = &memLink{hub: fh.handle}
	fh.link.push(protocol.TopicConfig, protocol.KioskConfig{KioskID: "k1", HeartbeatS: 30, Rates: prototest.Rates})
	k := startKiosk(f, kiosk.Config{ID: "k1", Link: fh.link, OriginZIP: "94544", ResendEvery: 200 * time.Millisecond,
		Deadline: 5 * time.Second, StaffBadges: []string{"STAFF-0001"}}, &fakePrinter{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	h := k.Handler()
	post := func(path, token string, body []byte) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	login := func() string {
		w := post("/api/v1/staff/login", "", []byte(`{"badge":"STAFF-0001"}`))
		var out struct{ Token string }
		json.Unmarshal(w.Body.Bytes(), &out)
		return out.Token
	}
	if login() == "" {
		f.Fatal("the staff badge does not log in")
	}

	for i, s := range []string{
		`{"pin":"1234"}`,
		`{"label":"1966-F8CF-01"}`,
		`{"label":"1966-F8CF-01"}`,
		`{"language":"es"}`,
		`{"rate_class":"1100","weight_mg":20000,"quantity":0,"payment":{"method":"card_token","token":"tok"}}`,
		`{"sheets":["1966-F8CF"]}`,
		`{"in_service":true}`,
		`{"known_mg":100000}`,
	} {
		f.Add(uint8(i), []byte(s))
	}
	for _, s := range []string{``, `null`, `[]`, `"x"`, `{`, `{"pin":"1","pin":"2"}`, `{"PIN":"1","pin":"2"}`, `{"pin":1}`,
		`{"nope":1}`, `{} {}`, `{}x`, `{"label":"\u00e9"}`, `{"lábel":"x"}`, `{"quantity":11,"rate_class":"1100"}`,
		`{"sheets":[` + strings.Repeat(`"1966-F8CF",`, 2000) + `"1966-F8CF"]}`, `{"known_mg":1e99}`, "\xff"} {
		for i := range apiRoutes {
			f.Add(uint8(i), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, route uint8, b []byte) {
		rt := apiRoutes[int(route)%len(apiRoutes)]
		v := rt.body()
		derr := protocol.DecodeJSON(b, v)
		if len(b) > 16<<10 {
			derr = protocol.Errorf(protocol.CodeMalformed, "too large")
		}
		if o, ok := v.(*kiosk.Order); ok && derr == nil && o.Validate() == nil {
			return // a sale
		}
		token := ""
		if rt.staff {
			if token = login(); token == "" {
				t.Fatal("the staff badge no longer logs in")
			}
		}
		w := post(rt.path, token, b)
		if ct, _, _ := mime.ParseMediaType(w.Header().Get("Content-Type")); ct != "application/json" {
			t.Fatalf("%s %q: %d answered as %q: %s", rt.path, b, w.Code, w.Header().Get("Content-Type"), w.Body)
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %q: %d answered not JSON: %q", rt.path, b, w.Code, w.Body)
		}
		if w.Code >= 500 && w.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s %q: %d %s", rt.path, b, w.Code, w.Body)
		}
		var eb protocol.ErrorBody
		json.Unmarshal(w.Body.Bytes(), &eb)
		if w.Code >= 400 && (eb.Error == nil || eb.Error.Code == "" || eb.Error.Code == protocol.CodeInternal) {
			t.Fatalf("%s %q: %d not in the error shape: %s", rt.path, b, w.Code, w.Body)
		}
		if derr == nil {
			return
		}
		want := protocol.AsError(derr).Code
		if want == protocol.CodeInternal {
			t.Fatalf("%s %q: the decoder's error is untyped: %v", rt.path, b, derr)
		}
		if w.Code < 400 || w.Code > 499 || eb.Error == nil || eb.Error.Code != want || w.Code != want.HTTPStatus() {
			t.Fatalf("%s %q: a bad body (%v) answered %d %s, want %d %s", rt.path, b, derr, w.Code, w.Body, want.HTTPStatus(), want)
		}
	})
}
