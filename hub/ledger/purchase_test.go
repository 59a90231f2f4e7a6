package ledger_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/ledger"
	hubpostal "github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/protocol"
)

// A GPSD purchase the authority sold but whose answer was lost (a 504 on
// the way back) stays pending. The next Reserve short of funds must not buy
// again under a new request id, which would make the vendor pay twice: while
// the answers are still lost it buys nothing more, and once the authority
// answers it finishes the pending purchase under its own request id, credits
// the GPSD once, and leaves nothing pending.
func TestLostPurchaseAnswerNotBoughtAgain(t *testing.T) {
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{Workers: 1})
		ctx := context.Background()
		var lose atomic.Bool
		target, err := url.Parse(f.paURL)
		if err != nil {
			t.Fatal(err)
		}
		rp := httputil.NewSingleHostReverseProxy(target)
		proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v1/funds" || r.Method != http.MethodPost || !lose.Load() {
				rp.ServeHTTP(w, r)
				return
			}
			rp.ServeHTTP(httptest.NewRecorder(), r) // the authority sells; its answer is lost
			http.Error(w, "upstream timeout", http.StatusGatewayTimeout)
		}))
		t.Cleanup(proxy.Close)
		sess, err := f.ks.Session()
		if err != nil {
			t.Fatal(err)
		}
		cfg := ledger.Config{Now: f.clock.Now, Holder: "lost-answer", Licence: testLicence}
		l, err := ledger.Open(ctx, f.db, cfg, sess, hubpostal.New(proxy.URL, "FR", testLicence), alerts.New(f.db, quiet, f.clock.Now), quiet)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(l.Close)
		gpsd := func() protocol.Mills {
			t.Helper()
			var dr int64
			if err := f.db.QueryRowContext(ctx, `SELECT dr FROM psd WHERE serial = 1`).Scan(&dr); err != nil {
				t.Fatal(err)
			}
			return protocol.Mills(dr)
		}
		pending := func() int {
			t.Helper()
			var n int
			if err := f.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM fund_purchases WHERE state = 'pending'`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		start, paid := gpsd(), f.pa.TotalFunds("FR")
		want := start + 1000 // more than the GPSD holds: Reserve buys

		lose.Store(true)
		for i := range 2 {
			if err := l.Reserve(ctx, want); protocol.AsError(err).Code != protocol.CodeFundsUnavailable {
				t.Fatalf("reserve %d with the answer lost: %v, want %s", i+1, err, protocol.CodeFundsUnavailable)
			}
		}
		if sold := f.pa.TotalFunds("FR") - paid; sold != 100_000_000 || pending() != 1 {
			t.Fatalf("with the answers lost the authority sold %d mills (want one purchase, 100000000), %d pending", sold, pending())
		}

		lose.Store(false)
		if err := l.Reserve(ctx, want); err != nil {
			t.Fatal(err)
		}
		l.Unreserve(want)
		sold := f.pa.TotalFunds("FR") - paid
		if credited := int64(gpsd() - start); sold != 100_000_000 || credited != sold || pending() != 0 {
			t.Fatalf("the authority sold %d mills, the GPSD was credited %d, %d purchases pending", sold, credited, pending())
		}
	})
}
