package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/web"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/verify"
)

// pagingVoids is a void list of n entries that records the limits the hub
// asks its pages for.
type pagingVoids struct {
	n      int
	mu     sync.Mutex
	limits []int
}

func (p *pagingVoids) VoidList(context.Context) ([]ledger.Void, error) { return nil, nil }
func (p *pagingVoids) VoidCount(context.Context) (int64, error)        { return int64(p.n), nil }
func (p *pagingVoids) IndiciumStatus(context.Context, string, protocol.LabelSerial, int64) (string, string, error) {
	return "unknown", "", nil
}

func (p *pagingVoids) VoidPage(_ context.Context, after string, limit int) ([]ledger.Void, string, error) {
	p.mu.Lock()
	p.limits = append(p.limits, limit)
	p.mu.Unlock()
	from := 0
	if after != "" {
		fmt.Sscan(after, &from)
	}
	var page []ledger.Void
	for i := from; i < p.n && len(page) < limit; i++ {
		page = append(page, ledger.Void{Meter: "FR2N50000061", Label: fmt.Sprintf("1966-%04X-01", i), AR: int64(i), Reason: "jam"})
	}
	if from+len(page) < p.n {
		return page, fmt.Sprint(from + len(page)), nil
	}
	return page, "", nil
}

// A page of the void list holds at most web.VoidPageMax entries, whatever
// its limit asks: anyone may ask for pages, and a page of 10,000 cost the
// hub 33 ms of CPU. A verifier that asks for 10,000 still gets every entry,
// by the links.
func TestVoidPagesCapped(t *testing.T) {
	t.Parallel()
	vb := &pagingVoids{n: web.VoidPageMax + 5}
	srv := httptest.NewServer((&web.Server{Voids: vb, Log: quiet}).Handler())
	defer srv.Close()
	st, link, _ := get(t, srv, "/api/v1/voided?limit=10000")
	if st != http.StatusOK || !strings.Contains(link, fmt.Sprintf("limit=%d", web.VoidPageMax)) {
		t.Fatalf("limit=10000: %d, Link %q, want the next page by %d", st, link, web.VoidPageMax)
	}
	get(t, srv, "/api/v1/voided?after=3")
	vb.mu.Lock()
	for _, l := range vb.limits {
		if l > web.VoidPageMax {
			t.Errorf("the ledger was asked for a page of %d", l)
		}
	}
	vb.mu.Unlock()
	got, err := verify.FetchVoidList(context.Background(), srv.URL, srv.Client())
	if err != nil || len(got) != vb.n {
		t.Fatalf("a verifier read %d of %d entries: %v", len(got), vb.n, err)
	}
}
