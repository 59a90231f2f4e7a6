package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
)

func TestOpenMigratesAndReopens(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hub.db")
	db, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := db.SchemaVersion(ctx)
	if err != nil || v < 1 {
		t.Fatalf("schema version %d, %v", v, err)
	}
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v", mode, err)
	}
	var sync int
	if err := db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil || sync != 2 {
		t.Fatalf("synchronous = %d, want 2 (FULL), %v", sync, err)
	}
	db.Close()
	db, err = store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	v2, _ := db.SchemaVersion(ctx)
	if v2 != v {
		t.Fatalf("reopen moved schema %d -> %d", v, v2)
	}
	db.Close()
}

func TestRebind(t *testing.T) {
	d := &store.DB{Dialect: store.Postgres}
	if got := d.Rebind("a = ? AND b = ?"); got != "a = $1 AND b = $2" {
		t.Fatal(got)
	}
}

// A job lease goes to one holder at a time, is renewed by it, and passes
// to another only once it has expired.
func TestJobLease(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		now := time.Unix(1_800_000_000, 0)
		take := func(holder string, at time.Time) bool {
			t.Helper()
			ok, err := db.TryLease(ctx, "reports", holder, at, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		if !take("hub-a", now) {
			t.Fatal("a free lease was not taken")
		}
		if take("hub-b", now.Add(30*time.Second)) {
			t.Fatal("hub-b took hub-a's live lease")
		}
		if !take("hub-a", now.Add(50*time.Second)) {
			t.Fatal("hub-a could not renew")
		}
		if take("hub-b", now.Add(100*time.Second)) {
			t.Fatal("hub-b took the renewed lease")
		}
		if db.Dialect == store.Postgres { // its lease runs on the server's clock, not the holders'
			if _, err := db.ExecContext(ctx, `UPDATE job_leases SET until = until - $1 WHERE name = 'reports'`, 2*time.Minute.Microseconds()); err != nil {
				t.Fatal(err)
			}
		}
		if !take("hub-b", now.Add(111*time.Second)) {
			t.Fatal("hub-b could not take the expired lease")
		}
		if take("hub-a", now.Add(112*time.Second)) {
			t.Fatal("hub-a took it back from hub-b")
		}
	})
}

// One hub process serves a SQLite database: a second is refused until the
// first lets go, or dies.
func TestServeAlone(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hub.db")
	a, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := store.Open(ctx, path) // a tool, or a second hub
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	release, err := a.ServeAlone()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ServeAlone(); !errors.Is(err, store.ErrShared) {
		t.Fatalf("a second hub on the database: %v, want ErrShared", err)
	}
	release()
	again, err := b.ServeAlone()
	if err != nil {
		t.Fatalf("after the first let go: %v", err)
	}
	again()
}

// The console finds a payment by its approval code or its account through
// partial indexes (schema v32), which a payment's writes skip while it has
// neither; PostgreSQL leaves room on the payments' pages for the capture
// to update its row in place.
func TestPaymentSearchesUsePartialIndexes(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db, conn, explain := explainer(t, dsn)
		if db.Dialect == store.Postgres {
			var opts string
			if err := conn.QueryRowContext(ctx, `SELECT COALESCE(array_to_string(reloptions, ','), '') FROM pg_class WHERE relname = 'payments'`).Scan(&opts); err != nil || opts != "fillfactor=70" {
				t.Errorf("payments reloptions %q, %v; want fillfactor=70", opts, err)
			}
		}
		for _, c := range []struct {
			query, index string
			args         []any
		}{
			{`SELECT kiosk_id, request_id FROM payments WHERE gateway_ref = ? AND last4 = ?`, "payments_gateway_ref", []any{"auth_000123", "4242"}},
			{`SELECT kiosk_id, request_id FROM payments WHERE account_id = ?`, "payments_account", []any{int64(7)}},
		} {
			if def := indexDef(t, db, conn, c.index); !strings.Contains(strings.ToUpper(def), "IS NOT NULL") {
				t.Errorf("index %s: %q; want a partial index", c.index, def)
			}
			if plan := explain(c.query, c.args...); !strings.Contains(plan, c.index) {
				t.Errorf("%s\nplan:\n%s\nwant %s", c.query, plan, c.index)
			}
		}
	})
}

// indicia keep one index on their labels (schema v33): it holds a label
// for its live indicium alone and finds a label in any state.
func TestOneLabelIndex(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, conn, explain := explainer(t, dsn)
		for _, gone := range []string{"indicia_label", "indicia_live_label"} {
			if def := indexDef(t, db, conn, gone); def != "" {
				t.Errorf("index %s is still there: %s", gone, def)
			}
		}
		if def := indexDef(t, db, conn, "indicia_label_live"); !strings.Contains(strings.ToUpper(def), "UNIQUE") {
			t.Errorf("indicia_label_live: %q; want a unique index", def)
		}
		for _, q := range []string{
			`SELECT COUNT(*) FROM indicia WHERE label = ? AND live = 1`,
			`SELECT kiosk_id, request_id FROM indicia WHERE label = ?`,
		} {
			if plan := explain(q, "1966-F8CF-01"); !strings.Contains(plan, "indicia_label_live") {
				t.Errorf("%s\nplan:\n%s\nwant indicia_label_live", q, plan)
			}
		}
	})
}

// explainer opens dsn and returns a connection and a function that plans a
// query on it. PostgreSQL's tables are empty, so it is asked whether an
// index can serve a query, not whether it would beat a scan today.
func explainer(t *testing.T, dsn string) (*store.DB, *sql.Conn, func(query string, args ...any) string) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	prefix := "EXPLAIN QUERY PLAN "
	if db.Dialect == store.Postgres {
		if _, err := conn.ExecContext(ctx, "SET enable_seqscan = off"); err != nil {
			t.Fatal(err)
		}
		prefix = "EXPLAIN "
	}
	return db, conn, func(query string, args ...any) string {
		t.Helper()
		rows, err := conn.QueryContext(ctx, db.Rebind(prefix+query), args...)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var plan strings.Builder
		for rows.Next() {
			cols, _ := rows.Columns()
			vals := make([]any, len(cols))
			for i := range vals {
				vals[i] = new(any)
			}
			if err := rows.Scan(vals...); err != nil {
				t.Fatal(err)
			}
			for _, v := range vals {
				fmt.Fprint(&plan, *(v.(*any)), " ")
			}
			plan.WriteString("\n")
		}
		return plan.String()
	}
}

// indexDef is an index's definition, or "" if there is no such index.
func indexDef(t *testing.T, db *store.DB, conn *sql.Conn, index string) string {
	t.Helper()
	q := `SELECT sql FROM sqlite_master WHERE name = ?`
	if db.Dialect == store.Postgres {
		q = `SELECT indexdef FROM pg_indexes WHERE indexname = ?`
	}
	var def string
	err := conn.QueryRowContext(context.Background(), db.Rebind(q), index).Scan(&def)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		t.Fatal(err)
	}
	return def
}

// Schema v40 dates the voids of a database that has them: one claimed in
// a report sent (in any state) keeps its sale time, as does one after the
// last period sent; one in a period sent without it takes that period's
// end. Bodies without claims, or with none listed, are read too.
func TestVoidTimesBackfill(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		old, err := store.OpenVersion(ctx, dsn, 39)
		if err != nil {
			t.Fatal(err)
		}
		exec := func(q string, args ...any) {
			t.Helper()
			if _, err := old.ExecContext(ctx, old.Rebind(q), args...); err != nil {
				t.Fatal(err)
			}
		}
		exec(`INSERT INTO psd (serial, kind, ar, dr, control, created_at) VALUES (1, 'mpsd', 0, 0, ?, 0)`, []byte{1})
		for i, row := range []struct {
			state   string
			created int64
		}{{"voided", 100}, {"voided", 150}, {"voided", 250}, {"printed", 120}, {"voided", 350}} {
			id := fmt.Sprintf("r%d", i)
			exec(`INSERT INTO sales (kiosk_id, request_id, body_hash, status, total, result, created_at) VALUES ('k', ?, ?, 'ok', 780, ?, 0)`, id, []byte{1}, []byte("{}"))
			exec(`INSERT INTO indicia (kiosk_id, request_id, mpsd, label, rate_class, postage, ar, dr, cert_serial, data, state, created_at, live)
				VALUES ('k', ?, 1, ?, '1100', 780, ?, 0, 1, ?, ?, ?, CASE WHEN ? = 'voided' THEN NULL ELSE 1 END)`,
				id, fmt.Sprintf("1966-F8CF-%02d", i+1), 780*(i+1), []byte{1}, row.state, row.created, row.state)
		}
		// [0, 200) accepted, claiming r0 and a spoiled stamp; [200, 300)
		// sent with its answer lost, claiming r2; [300, 400) refused, with
		// no claims listed; an old body with none at all.
		for _, r := range []struct {
			from, to int64
			state    string
			body     string
		}{
			{0, 200, "accepted", `{"report_id":"a","voided":[{"mpsd":1,"label":"1966-F8CF-01","ar":780},{"mpsd":1,"label":"1966-F8CF-09","ar":99999,"reason":"spoiled: x"}]}`},
			{200, 300, "pending", `{"report_id":"b","voided":[{"mpsd":1,"label":"1966-F8CF-03","ar":2340}]}`},
			{300, 400, "refused", `{"report_id":"c","voided":null}`},
			{300, 400, "refused", `{"report_id":"c"}`},
		} {
			exec(`INSERT INTO reports (period_from, period_to, created_at, body, state) VALUES (?, ?, 0, ?, ?)`, r.from, r.to, []byte(r.body), r.state)
		}
		exec(`INSERT INTO indicia (kiosk_id, request_id, mpsd, label, rate_class, postage, ar, dr, cert_serial, data, state, created_at, live)
			VALUES ('k', 'r4', 1, '1966-F8CF-06', '1100', 780, 9000, 0, 1, ?, 'voided', 450, NULL)`, []byte{1})
		old.Close()
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		rows, err := db.QueryContext(ctx, `SELECT label, voided_at FROM indicia ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for rows.Next() {
			var label string
			var at sql.NullInt64
			if err := rows.Scan(&label, &at); err != nil {
				t.Fatal(err)
			}
			when := "-"
			if at.Valid {
				when = fmt.Sprint(at.Int64)
			}
			got = append(got, label[len(label)-2:]+":"+when)
		}
		rows.Close()
		// r0 claimed: its sale time. r1, in [0, 200) but not claimed: 400,
		// the end of the last period sent. r2 claimed in the pending one.
		// r3 printed. r4 (350) in a period sent but refused, unclaimed: 400.
		// The last, after every period sent: its sale time.
		if want := "01:100 02:400 03:250 04:- 05:400 06:450"; strings.Join(got, " ") != want {
			t.Fatalf("void times %v, want %s", got, want)
		}
		if db.Dialect == store.Postgres {
			if _, err := db.ExecContext(ctx, `UPDATE indicia SET voided_at = NULL WHERE label = '1966-F8CF-01'`); err == nil {
				t.Fatal("PostgreSQL took a void without its time")
			}
		}
	})
}

// Schema v33 marks the indicia of a database that has them: the live ones
// hold their labels, the voided ones (a label may carry several, and a new
// stamp after them) hold nothing.
func TestLiveMarkMigrates(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		old, err := store.OpenVersion(ctx, dsn, 32)
		if err != nil {
			t.Fatal(err)
		}
		exec := func(db *store.DB, q string, args ...any) error {
			_, err := db.ExecContext(ctx, db.Rebind(q), args...)
			return err
		}
		if err := exec(old, `INSERT INTO psd (serial, kind, ar, dr, control, created_at) VALUES (1, 'mpsd', 0, 0, ?, 0)`, []byte{1}); err != nil {
			t.Fatal(err)
		}
		for i, st := range []string{"voided", "voided", "printed", "issued"} {
			id := fmt.Sprintf("r%d", i)
			label := "1966-F8CF-01"
			if i == 3 {
				label = "1966-F8CF-02"
			}
			if err := exec(old, `INSERT INTO sales (kiosk_id, request_id, body_hash, status, total, result, created_at) VALUES ('k', ?, ?, 'ok', 780, ?, 0)`, id, []byte{1}, []byte("{}")); err != nil {
				t.Fatal(err)
			}
			if err := exec(old, `INSERT INTO indicia (kiosk_id, request_id, mpsd, label, rate_class, postage, ar, dr, cert_serial, data, state, created_at)
				VALUES ('k', ?, 1, ?, '1100', 780, 0, 0, 1, ?, ?, 0)`, id, label, []byte{1}, st); err != nil {
				t.Fatal(err)
			}
		}
		old.Close()
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		rows, err := db.QueryContext(ctx, `SELECT request_id, live FROM indicia ORDER BY request_id`)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for rows.Next() {
			var id string
			var live sql.NullInt64
			if err := rows.Scan(&id, &live); err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprintf("%s:%v", id, live.Valid))
		}
		rows.Close()
		if want := "r0:false r1:false r2:true r3:true"; strings.Join(got, " ") != want {
			t.Fatalf("live marks %v, want %s", got, want)
		}
		// The printed stamp holds label 01: no second live one.
		if err := exec(db, `INSERT INTO indicia (kiosk_id, request_id, mpsd, label, rate_class, postage, ar, dr, cert_serial, data, created_at)
			VALUES ('k', 'r3', 1, '1966-F8CF-01', '1100', 780, 0, 0, 1, ?, 0)`, []byte{1}); !store.IsConflict(err) {
			t.Fatalf("a second live stamp on a label: %v", err)
		}
	})
}
