package hub_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/frank-postage/frank/protocol"
)

// A kiosk that has sold keeps its store: hub kiosk add K S for another
// store is refused with invalid_request, naming the way out (retire it,
// add a new kiosk id), and changes nothing, so the old store's staff still
// find its sales and the new store's staff neither find nor refund them.
// Provisioning it again in its own store (a lost password recovered) still
// works, as does moving a kiosk that never sold.
func TestKioskWithSalesKeepsItsStore(t *testing.T) {
	t.Parallel()
	e := newSearchEnv(t)
	ctx := context.Background()

	_, err := e.h.Fleet().Add(ctx, "kiosk-1", "store-b")
	if !errors.Is(err, &protocol.Error{Code: protocol.CodeInvalidRequest}) {
		t.Fatalf("kiosk-1, which sold in store-a, added in store-b: %v, want invalid_request", err)
	}
	for _, want := range []string{"store store-a", "hub kiosk retire kiosk-1", "new kiosk id in store store-b", "--store store-a"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not say %q: %v", want, err)
		}
	}
	if k, err := e.h.Fleet().Get(ctx, "kiosk-1"); err != nil || k.Store != "store-a" {
		t.Fatalf("kiosk-1 after the refused move: %+v %v", k, err)
	}
	if got := e.search("sam", "request", "srch-2"); len(got) != 0 {
		t.Errorf("store-b staff sam finds store-a's sale srch-2: %s", requestIDs(got))
	}
	if got := e.search("sue", "request", "srch-2"); len(got) != 1 || got[0].Store != "store-a" {
		t.Errorf("store-a staff sue's search for her store's sale srch-2: %+v", got)
	}
	sam := e.browser()
	if st, loc, page := sam.do("POST", "/console/login", url.Values{"login": {"sam"}, "password": {"operator password 1"}}); st != http.StatusSeeOther {
		t.Fatalf("sam's login: %d %s %.200s", st, loc, page)
	}
	if st, _, body := sam.post("/console/stock", "/console/refunds", url.Values{"label": {"1966-F8CF-02"}, "reason": {"move"}, "handed_in": {"yes"}}); st != http.StatusUnprocessableEntity || !strings.Contains(body, "not sold at a kiosk you look after") {
		t.Errorf("store-b staff sam refunds store-a's stamp 1966-F8CF-02: %d %.300s", st, body)
	}

	// A lost password recovered: the same store, a new password that
	// logs in.
	pw, err := e.h.Fleet().Add(ctx, "kiosk-1", "store-a")
	if err != nil || pw == "" || pw == e.pw["kiosk-1"] {
		t.Fatalf("kiosk-1 added again in store-a: %q %v", pw, err)
	}
	if _, err := e.connect("kiosk-1", pw); err != nil {
		t.Fatalf("kiosk-1 with its new password: %v", err)
	}

	// A kiosk that never sold moves.
	if _, err := e.h.Fleet().Add(ctx, "kiosk-3", "store-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.h.Fleet().Add(ctx, "kiosk-3", "store-b"); err != nil {
		t.Fatalf("kiosk-3, which never sold, moved to store-b: %v", err)
	}
	if k, err := e.h.Fleet().Get(ctx, "kiosk-3"); err != nil || k.Store != "store-b" {
		t.Fatalf("kiosk-3 after its move: %+v %v", k, err)
	}
}
