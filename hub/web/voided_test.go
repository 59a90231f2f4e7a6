package web_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/frank-postage/frank/hsm"
	"github.com/frank-postage/frank/hsm/soft"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/ledger"
	hubpostal "github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/hub/web"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/pgtest"
	"github.com/frank-postage/frank/testbench/postal"
	"github.com/frank-postage/frank/testbench/verify"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// voidedLedger is a real ledger on dsn whose void list has n stamps,
// voided as a retired kiosk's are, with the store-a stamps sold between
// them still live.
func voidedLedger(t *testing.T, dsn string, n int) *ledger.Ledger {
	t.Helper()
	ctx := context.Background()
	pa, err := postal.New("", quiet)
	if err != nil {
		t.Fatal(err)
	}
	paSrv := httptest.NewServer(pa.Handler())
	t.Cleanup(paSrv.Close)
	ks, err := soft.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := ks.GenerateMACKey("frank-control-1"); err != nil {
		t.Fatal(err)
	}
	pub, err := ks.GenerateSigningKey("sign")
	if err != nil {
		t.Fatal(err)
	}
	authority := hubpostal.New(paSrv.URL, "FR", postal.DemoLicence)
	if _, err := authority.RegisterKey(ctx, pub); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, k := range []string{"kiosk-1", "kiosk-2"} {
		if _, err := fleet.New(db).Add(ctx, k, "store-"+k); err != nil {
			t.Fatal(err)
		}
	}
	now := func() time.Time { return time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC) }
	sess, err := ks.Session()
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.Open(ctx, db, ledger.Config{Licence: postal.DemoLicence, Now: now}, sess, authority, alerts.New(db, quiet, now), quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	pool, err := psdm.Start(ctx, psdm.Config{Workers: 1, RenewEvery: time.Hour}, func() (hsm.Session, error) { return ks.Session() },
		psdm.Key{Label: "sign", CertSerial: 1}, l, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	sell := func(kiosk, id string, labels ...string) {
		t.Helper()
		h := sha256.Sum256([]byte(id))
		s := &ledger.Sale{KioskID: kiosk, RequestID: id, BodyHash: h[:], UserID: 42, OriginZIP: 94544}
		for _, lb := range labels {
			ls, err := protocol.ParseLabelSerial(lb)
			if err != nil {
				t.Fatal(err)
			}
			s.Items = append(s.Items, ledger.Item{RateClass: "1100", Postage: 780, Label: ls})
		}
		if _, err := pool.Sell(ctx, s); err != nil {
			t.Fatalf("sale %s: %v", id, err)
		}
	}
	for i := 0; i < n; i += protocol.MaxItems {
		var labels []string
		for p := 1; p <= min(protocol.MaxItems, n-i); p++ {
			labels = append(labels, fmt.Sprintf("1966-%04X-%02d", i/protocol.MaxItems, p))
		}
		sell("kiosk-1", fmt.Sprint("void-", i), labels...)
		sell("kiosk-2", fmt.Sprint("live-", i), fmt.Sprintf("2222-%04X-01", i/protocol.MaxItems))
	}
	if _, err := l.VoidIssued(ctx, "kiosk-1", "kiosk_retired"); err != nil {
		t.Fatal(err)
	}
	return l
}

// smallPages serves h as a hub whose pages are at most per entries, as a
// hub may serve fewer than asked: it lowers a verifier's first limit, and
// the hub's own links carry it on.
func smallPages(h http.Handler, per string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if q := r.URL.Query(); q.Has("limit") && !q.Has("after") {
			q.Set("limit", per)
			r.URL.RawQuery = q.Encode()
		}
		h.ServeHTTP(w, r)
	})
}

// get reads path from srv: status, Link, body.
func get(t *testing.T, srv *httptest.Server, path string) (int, string, []byte) {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Link"), b
}

// A void list longer than a page: asked with no query the hub answers it
// whole as it always did, with no Link; asked for pages it links them to
// the end; the verifier gets every entry across pages, online and into
// the file it saves. A limit over the cap, or a cursor the hub never gave,
// is invalid_request.
func TestVoidedPages(t *testing.T) {
	t.Parallel()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		l := voidedLedger(t, dsn, 45)
		s := &web.Server{Voids: l, Log: quiet}
		srv := httptest.NewServer(s.Handler())
		defer srv.Close()
		ctx := context.Background()

		whole, err := l.VoidList(ctx)
		if err != nil || len(whole) != 45 {
			t.Fatalf("the ledger's list: %d entries, %v", len(whole), err)
		}
		st, link, b := get(t, srv, "/api/v1/voided")
		var list []ledger.Void
		if err := json.Unmarshal(b, &list); st != http.StatusOK || err != nil || link != "" || len(list) != len(whole) {
			t.Fatalf("unpaged: %d, Link %q, %d entries, %v", st, link, len(list), err)
		}
		want, _ := json.Marshal(whole)
		if got := strings.TrimSpace(string(b)); got != string(want) {
			t.Errorf("unpaged: the body is not the whole list as before:\n%s\nwant\n%s", got, want)
		}

		// By hand: pages of 20 linked to the end.
		var paged []ledger.Void
		next, pages := "/api/v1/voided?limit=20", 0
		for next != "" {
			st, link, b := get(t, srv, next)
			var page []ledger.Void
			if err := json.Unmarshal(b, &page); st != http.StatusOK || err != nil || len(page) > 20 || pages > 5 {
				t.Fatalf("%s: %d, %d entries, %v", next, st, len(page), err)
			}
			paged, pages = append(paged, page...), pages+1
			next = ""
			if link != "" {
				ref, ok := strings.CutPrefix(link, "<")
				ref, ok2 := strings.CutSuffix(ref, `>; rel="next"`)
				u, err := url.Parse(ref)
				if !ok || !ok2 || err != nil || u.Path != "/api/v1/voided" || u.Query().Get("limit") != "20" || u.Query().Get("after") == "" {
					t.Fatalf("Link %q", link)
				}
				next = ref
			}
		}
		if pages != 3 || len(paged) != len(whole) {
			t.Fatalf("pages of 20: %d pages, %d entries of %d", pages, len(paged), len(whole))
		}
		for i := range whole {
			if paged[i] != whole[i] {
				t.Fatalf("pages of 20: entry %d is %+v, the whole list's %+v", i, paged[i], whole[i])
			}
		}

		// The verifier, from a hub paging by 7.
		small := httptest.NewServer(smallPages(s.Handler(), "7"))
		defer small.Close()
		vl, err := verify.FetchVoidList(ctx, small.URL, small.Client())
		if err != nil || len(vl) != len(whole) {
			t.Fatalf("the verifier's list: %d entries of %d, %v", len(vl), len(whole), err)
		}
		raw, err := verify.FetchVoidFile(ctx, small.URL, small.Client())
		if err != nil {
			t.Fatal(err)
		}
		saved, err := verify.ParseVoidList(raw)
		if err != nil || len(saved) != len(whole) {
			t.Fatalf("the saved list: %d entries of %d, %v", len(saved), len(whole), err)
		}
		last := whole[len(whole)-1]
		ls, _ := protocol.ParseLabelSerial(last.Label)
		mpsd, _ := strconv.ParseUint(strings.TrimPrefix(last.Meter, "FR2N"), 10, 32)
		in := &protocol.Indicium{Vendor: "FR", Model: "2N", MPSDSerial: uint32(mpsd), Label: ls, AR: protocol.Mills(last.AR)}
		if in.MeterNumber() != last.Meter {
			t.Fatalf("meter %s, want %s", in.MeterNumber(), last.Meter)
		}
		for name, vl := range map[string]verify.VoidList{"online": vl, "saved": saved} {
			if why, voided := vl.Voided(in); !voided || why != last.Reason {
				t.Errorf("%s: the last page's stamp %+v: voided %v %q", name, last, voided, why)
			}
		}

		for _, q := range []string{"limit=0", "limit=10001", "limit=x", "limit=", "limit=5&after=nope", "after=i1x", "limit=5&after="} {
			st, _, b := get(t, srv, "/api/v1/voided?"+q)
			if q == "limit=5&after=" { // the first page
				if st != http.StatusOK {
					t.Errorf("%s: %d %s", q, st, b)
				}
				continue
			}
			if e := protocol.DecodeHTTPError(b); st != http.StatusBadRequest || e == nil || e.Code != protocol.CodeInvalidRequest {
				t.Errorf("%s: %d %s, want 400 %s", q, st, b, protocol.CodeInvalidRequest)
			}
		}
	})
}

// countingVoids counts how often the whole void list is built.
type countingVoids struct {
	*ledger.Ledger
	built atomic.Int32
}

func (c *countingVoids) VoidList(ctx context.Context) ([]ledger.Void, error) {
	c.built.Add(1)
	return c.Ledger.VoidList(ctx)
}

// The whole void list, which anyone may ask for, is built again only when
// it has grown, and carries an ETag: a verifier that has it gets 304.
// Before, every anonymous request read and encoded the whole list.
func TestWholeVoidListBuiltWhenItGrows(t *testing.T) {
	t.Parallel()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		l := voidedLedger(t, dsn, 12)
		voids := &countingVoids{Ledger: l}
		srv := httptest.NewServer((&web.Server{Voids: voids, Log: quiet}).Handler())
		defer srv.Close()
		fetch := func(etag string) (int, string, []ledger.Void) {
			t.Helper()
			req, _ := http.NewRequest("GET", srv.URL+"/api/v1/voided", nil)
			if etag != "" {
				req.Header.Set("If-None-Match", etag)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var list []ledger.Void
			if resp.StatusCode == http.StatusOK {
				if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
					t.Fatal(err)
				}
			}
			return resp.StatusCode, resp.Header.Get("ETag"), list
		}
		st, etag, list := fetch("")
		if st != http.StatusOK || etag == "" || len(list) != 12 {
			t.Fatalf("first: %d %q %d entries", st, etag, len(list))
		}
		for range 5 {
			if st, again, list := fetch(""); st != http.StatusOK || again != etag || len(list) != 12 {
				t.Fatalf("again: %d %q %d entries", st, again, len(list))
			}
		}
		if st, _, _ := fetch(etag); st != http.StatusNotModified {
			t.Fatalf("with its ETag: %d", st)
		}
		if n := voids.built.Load(); n != 1 {
			t.Fatalf("built %d times for 7 requests of one list", n)
		}
		if _, err := l.VoidIssued(context.Background(), "kiosk-2", "kiosk_retired"); err != nil {
			t.Fatal(err)
		}
		st, grown, list := fetch(etag)
		if st != http.StatusOK || grown == etag || len(list) != 14 {
			t.Fatalf("after two more voids: %d %q %d entries", st, grown, len(list))
		}
		if n := voids.built.Load(); n != 2 {
			t.Fatalf("built %d times", n)
		}
	})
}
