package console

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// TestMain stops the PostgreSQL server the tests share.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// ackBook is an alert book that only records acknowledgements.
type ackBook struct{ acked []string }

func (b *ackBook) List(context.Context, bool) ([]alerts.Alert, error) { return []alerts.Alert{}, nil }

func (b *ackBook) Ack(_ context.Context, id int64, by string) error {
	if id != 1 {
		return errors.New("no such alert")
	}
	b.acked = append(b.acked, by)
	return nil
}

// tokenAPI is the operator API on real operators: ops olga and staff sam
// (store-a), with the store's clock.
type tokenAPI struct {
	t     *testing.T
	ops   *operators.Operators
	book  *ackBook
	h     http.Handler
	clock time.Time
}

func newTokenAPI(t *testing.T, dsn string) *tokenAPI {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	a := &tokenAPI{t: t, book: &ackBook{}, clock: time.Unix(1_800_000_000, 0)}
	a.ops = operators.New(db, func() time.Time { return a.clock })
	a.ops.Cost = bcrypt.MinCost
	if _, err := db.ExecContext(ctx, `INSERT INTO stores (id, name, created_at) VALUES ('store-a', 'A', 0)`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ops.Add(ctx, "olga", "operator password 1", operators.RoleOps, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ops.Add(ctx, "sam", "operator password 1", operators.RoleStaff, []string{"store-a"}); err != nil {
		t.Fatal(err)
	}
	c := &Console{People: a.ops, Alerts: a.book, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	a.h = c.APIRoutes()
	return a
}

func (a *tokenAPI) token(login string, scope operators.Scope, ttl time.Duration) string {
	a.t.Helper()
	tok, err := a.ops.NewToken(context.Background(), login, "test", scope, ttl)
	if err != nil {
		a.t.Fatal(err)
	}
	return tok
}

// do calls the API with tok and returns the status and body.
func (a *tokenAPI) do(method, path, tok string) (int, string) {
	a.t.Helper()
	req := httptest.NewRequest(method, path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	w := httptest.NewRecorder()
	a.h.ServeHTTP(w, req)
	return w.Code, w.Body.String()
}

// refused checks the API answered with code and a message naming want.
func (a *tokenAPI) refused(what string, st int, body string, code protocol.Code, want string) {
	a.t.Helper()
	pe := protocol.DecodeHTTPError([]byte(body))
	if st != code.HTTPStatus() || pe == nil || pe.Code != code || !strings.Contains(pe.Message, want) {
		a.t.Errorf("%s: %d %s, want %s naming %q", what, st, body, code, want)
	}
}

// A read-only token (the default) reads, but anything that changes
// things is refused as read-only before it reaches the route.
func TestReadOnlyTokenOnlyReads(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		a := newTokenAPI(t, dsn)
		tok := a.token("olga", operators.ReadOnly, time.Hour)
		if st, body := a.do("GET", "/me", tok); st != http.StatusOK || !strings.Contains(body, `"scope":"read"`) {
			t.Errorf("GET /me: %d %s", st, body)
		}
		if st, body := a.do("GET", "/alerts", tok); st != http.StatusOK {
			t.Errorf("GET /alerts: %d %s", st, body)
		}
		// HEAD is as safe as GET (the router does not serve it: 405).
		if st, body := a.do("HEAD", "/alerts", tok); st == http.StatusForbidden {
			t.Errorf("HEAD /alerts refused: %s", body)
		}
		st, body := a.do("POST", "/alerts/1/ack", tok)
		a.refused("POST /alerts/1/ack", st, body, protocol.CodeForbidden, "read-only")
		st, body = a.do("PUT", "/settings", tok)
		a.refused("PUT /settings", st, body, protocol.CodeForbidden, "read-only")
		if len(a.book.acked) != 0 {
			t.Errorf("a read-only token acknowledged an alert: %v", a.book.acked)
		}
	})
}

// A write token may POST; its operator's role still limits it: a staff
// write token gets no ops-only route.
func TestWriteTokenWrites(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		a := newTokenAPI(t, dsn)
		if st, body := a.do("POST", "/alerts/1/ack", a.token("olga", operators.ReadWrite, time.Hour)); st != http.StatusOK || !strings.Contains(body, `"acked_by":"olga"`) {
			t.Errorf("ops write token POST /alerts/1/ack: %d %s", st, body)
		}
		st, body := a.do("POST", "/alerts/1/ack", a.token("sam", operators.ReadWrite, time.Hour))
		a.refused("staff write token POST /alerts/1/ack", st, body, protocol.CodeForbidden, "for vendor ops only")
		if len(a.book.acked) != 1 || a.book.acked[0] != "olga" {
			t.Errorf("acknowledged by %v, want olga alone", a.book.acked)
		}
	})
}

// An expired token is refused as a wrong one is, for reads and writes.
func TestExpiredTokenRefused(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		a := newTokenAPI(t, dsn)
		tok := a.token("olga", operators.ReadWrite, 24*time.Hour)
		if st, body := a.do("GET", "/me", tok); st != http.StatusOK {
			t.Fatalf("GET /me before expiry: %d %s", st, body)
		}
		a.clock = a.clock.Add(24 * time.Hour)
		for _, m := range []string{"GET /me", "POST /alerts/1/ack"} {
			method, path, _ := strings.Cut(m, " ")
			st, body := a.do(method, path, tok)
			a.refused(m+" after expiry", st, body, protocol.CodeUnauthorized, "Bearer")
		}
		if len(a.book.acked) != 0 {
			t.Errorf("an expired token acknowledged an alert: %v", a.book.acked)
		}
	})
}

// A metrics token (the one Prometheus holds) reads /metrics and nothing
// else: every operator API route and the ops-only /api/v1/psdm refuse it
// as forbidden. An ops read token still reads /metrics; a staff
// operator's metrics token does not.
func TestMetricsTokenReadsOnlyMetrics(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		a := newTokenAPI(t, dsn)
		c := &Console{People: a.ops, Alerts: a.book, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		metricsBody := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "frank_up 1\n") })
		scrape, psdm := c.ProtectMetrics(metricsBody), c.Protect(metricsBody)
		get := func(h http.Handler, path, tok string) (int, string) {
			req := httptest.NewRequest("GET", path, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			return w.Code, w.Body.String()
		}
		tok := a.token("olga", operators.MetricsOnly, time.Hour)
		if st, body := get(scrape, "/metrics", tok); st != http.StatusOK || body != "frank_up 1\n" {
			t.Errorf("/metrics with a metrics token: %d %s", st, body)
		}
		for _, p := range []string{"/me", "/fleet", "/alerts", "/exports/sales.csv", "/search?q=alice", "/nonexistent"} {
			st, body := a.do("GET", p, tok)
			a.refused("GET "+p+" with a metrics token", st, body, protocol.CodeForbidden, "/metrics")
		}
		st, body := a.do("POST", "/alerts/1/ack", tok)
		a.refused("POST /alerts/1/ack with a metrics token", st, body, protocol.CodeForbidden, "")
		if len(a.book.acked) != 0 {
			t.Errorf("a metrics token acknowledged %v", a.book.acked)
		}
		st, body = get(psdm, "/api/v1/psdm", tok)
		a.refused("/api/v1/psdm with a metrics token", st, body, protocol.CodeForbidden, "/metrics")
		if st, _ := get(scrape, "/metrics", a.token("olga", operators.ReadOnly, time.Hour)); st != http.StatusOK {
			t.Errorf("/metrics with an ops read token: %d", st)
		}
		st, body = get(scrape, "/metrics", a.token("sam", operators.MetricsOnly, time.Hour))
		a.refused("/metrics with a staff metrics token", st, body, protocol.CodeForbidden, "ops")
	})
}
