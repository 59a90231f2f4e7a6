package verify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/verify"
)

// voidHub serves a void list of n entries: the whole list to a client that
// asks no page, else pages of at most per entries, fewer than asked as a
// hub may serve, linked by Link rel="next" until the last. The last entry
// is the test vector's stamp.
type voidHub struct {
	n, per int
	reason string                 // of every entry but the last; default "jam"
	link   func(after int) string // the next page's Link; default the hub's own form
	mu     sync.Mutex
	asked  []string
}

// requests are what the hub was asked, in order.
func (h *voidHub) requests() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.asked)
}

func (h *voidHub) entry(i int) verify.Void {
	if i == h.n-1 {
		in := prototest.Indicia[0].Fields
		return verify.Void{Meter: in.MeterNumber(), Label: in.Label.String(), AR: int64(in.AR), Reason: "refund_requested"}
	}
	why := h.reason
	if why == "" {
		why = "jam"
	}
	return verify.Void{Meter: "FR2N50000001", Label: fmt.Sprintf("1966-%04X-%02d", i/24, i%24+1), AR: int64(i + 1), Reason: why}
}

func (h *voidHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.asked = append(h.asked, r.URL.RequestURI())
	h.mu.Unlock()
	q := r.URL.Query()
	from, to := 0, h.n
	if q.Has("limit") || q.Has("after") {
		limit, err := strconv.Atoi(q.Get("limit"))
		if err != nil || limit < 1 {
			http.Error(w, "limit", http.StatusBadRequest)
			return
		}
		if q.Has("after") {
			if from, err = strconv.Atoi(q.Get("after")); err != nil {
				http.Error(w, "after", http.StatusBadRequest)
				return
			}
		}
		to = min(from+limit, from+h.per, h.n)
		if to < h.n {
			link := fmt.Sprintf("</api/v1/voided?after=%d&limit=%d>; rel=\"next\"", to, limit)
			if h.link != nil {
				link = h.link(to)
			}
			w.Header().Set("Link", link)
		}
	}
	w.Write(h.page(from, to))
}

// page is the JSON of entries [from, to).
func (h *voidHub) page(from, to int) []byte {
	list := []verify.Void{}
	for i := from; i < to; i++ {
		list = append(list, h.entry(i))
	}
	b, _ := json.Marshal(list)
	return b
}

// whole is the list's JSON unpaged.
func (h *voidHub) whole() []byte { return h.page(0, h.n) }

// The verifier reads a paged void list to its end, online and into the
// file it saves for offline checks: a stamp voided on the last page is
// found. A hub that does not page answers everything to the first ask.
func TestFetchVoidListFollowsPages(t *testing.T) {
	ctx := context.Background()
	in := prototest.Indicia[0].Fields
	for _, h := range []*voidHub{
		{n: 25, per: 10},
		{n: 25, per: 10, link: func(after int) string { // several links, a relative one
			return fmt.Sprintf(`</help>; rel="help", <voided?limit=10&after=%d>; title="a, b"; rel="last next"`, after)
		}},
		{n: 20, per: 10}, // the last page full
		{n: 1, per: 10},
	} {
		srv := httptest.NewServer(h)
		list, err := verify.FetchVoidList(ctx, srv.URL, srv.Client())
		if err != nil {
			t.Fatal(err)
		}
		asked := h.requests()
		raw, err := verify.FetchVoidFile(ctx, srv.URL, srv.Client())
		srv.Close()
		if err != nil {
			t.Fatal(err)
		}
		saved, err := verify.ParseVoidList(raw)
		if err != nil {
			t.Fatalf("the saved list: %v\n%s", err, raw)
		}
		for name, vl := range map[string]verify.VoidList{"online": list, "saved": saved} {
			if why, voided := vl.Voided(&in); len(vl) != h.n || !voided || why != "refund_requested" {
				t.Errorf("%s, %d entries in pages of %d: got %d entries, the last page's stamp voided %v", name, h.n, h.per, len(vl), voided)
			}
		}
		if want := (h.n + h.per - 1) / h.per; len(asked) != want || !strings.Contains(asked[0], "limit=") {
			t.Errorf("%d entries in pages of %d: asked %v, want %d pages", h.n, h.per, asked, want)
		}
	}
	// A hub from before paging.
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode([]verify.Void{{Meter: in.MeterNumber(), Label: in.Label.String(), AR: int64(in.AR), Reason: "jam"}})
	}))
	defer old.Close()
	if list, err := verify.FetchVoidList(ctx, old.URL, old.Client()); err != nil || len(list) != 1 {
		t.Errorf("a hub that does not page: %v, %v", list, err)
	}
}

// A void list of over 16 MiB, the most the verifier reads at once, is read
// in pages: whole, it could not be read at all.
func TestFetchVoidListOver16MiB(t *testing.T) {
	ctx := context.Background()
	h := &voidHub{n: 40_000, per: verify.VoidPageLimit, reason: "spoiled: " + strings.Repeat("x", 400)}
	srv := httptest.NewServer(h)
	defer srv.Close()
	if b := h.whole(); len(b) <= 16<<20 {
		t.Fatalf("the whole list is %d bytes, want over 16 MiB", len(b))
	}
	in := prototest.Indicia[0].Fields
	list, err := verify.FetchVoidList(ctx, srv.URL, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	var file strings.Builder
	if err := verify.WriteVoidFile(ctx, srv.URL, srv.Client(), &file); err != nil {
		t.Fatal(err)
	}
	saved, err := verify.ParseVoidList([]byte(file.String()))
	if err != nil {
		t.Fatal(err)
	}
	for name, vl := range map[string]verify.VoidList{"online": list, "saved": saved} {
		if _, voided := vl.Voided(&in); len(vl) != h.n || !voided {
			t.Errorf("%s: %d entries of %d, the last one's stamp voided %v", name, len(vl), h.n, voided)
		}
	}
}

// A next page elsewhere, or one already read, ends the walk with an error
// rather than a list that may be partial or never ends.
func TestFetchVoidListRefusesBadLinks(t *testing.T) {
	ctx := context.Background()
	for name, link := range map[string]func(int) string{
		"another server": func(after int) string {
			return fmt.Sprintf(`<http://example.com/api/v1/voided?after=%d&limit=10>; rel="next"`, after)
		},
		"a loop": func(int) string { return `</api/v1/voided?after=0&limit=10>; rel="next"` },
	} {
		h := &voidHub{n: 25, per: 10, link: link}
		srv := httptest.NewServer(h)
		if list, err := verify.FetchVoidList(ctx, srv.URL, srv.Client()); err == nil {
			t.Errorf("%s: read %d entries", name, len(list))
		}
		if _, err := verify.FetchVoidFile(ctx, srv.URL, srv.Client()); err == nil {
			t.Errorf("%s: saved a file", name)
		}
		srv.Close()
	}
}
