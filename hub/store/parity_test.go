package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// column is what the two dialects must agree on for a column.
type column struct {
	kind    string // int, text, blob, real, bool or time
	notNull bool
}

// schema is what both migration histories must build alike.
type schema struct {
	columns map[string]column // "table.column"
	indexes map[string]string // "table.index" -> its columns, comma-separated
}

// kindOf maps either dialect's declared type to one kind.
func kindOf(decl string) string {
	d := strings.ToLower(decl)
	switch {
	case strings.Contains(d, "int"):
		return "int"
	case strings.Contains(d, "char"), strings.Contains(d, "text"):
		return "text"
	case strings.Contains(d, "blob"), strings.Contains(d, "bytea"):
		return "blob"
	case strings.Contains(d, "real"), strings.Contains(d, "double"), strings.Contains(d, "numeric"):
		return "real"
	case strings.Contains(d, "bool"):
		return "bool"
	case strings.Contains(d, "time"), strings.Contains(d, "date"):
		return "time"
	}
	return d
}

func strings2(ctx context.Context, db *sql.DB, query string, args ...any) ([][]string, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out [][]string
	for rows.Next() {
		row := make([]string, len(cols))
		ptrs := make([]any, len(cols))
		for i := range row {
			ptrs[i] = &row[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		out = append(out, row)
	}
	return out, rows.Err()
}

func sqliteSchema(ctx context.Context, db *sql.DB) (schema, error) {
	s := schema{columns: map[string]column{}, indexes: map[string]string{}}
	tables, err := strings2(ctx, db, `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`)
	if err != nil {
		return s, err
	}
	for _, tbl := range tables {
		cols, err := strings2(ctx, db, `SELECT name, type, "notnull", pk FROM pragma_table_info(?)`, tbl[0])
		if err != nil {
			return s, err
		}
		for _, c := range cols {
			// A SQLite primary key may hold NULL unless declared NOT NULL;
			// PostgreSQL's never does, and Frank never writes one.
			s.columns[tbl[0]+"."+c[0]] = column{kind: kindOf(c[1]), notNull: c[2] == "1" || c[3] != "0"}
		}
	}
	// Indexes a migration created by name; those behind a key are the
	// key's, compared as columns above.
	idx, err := strings2(ctx, db, `SELECT m.tbl_name, m.name, group_concat(i.name, ',') FROM sqlite_master m, pragma_index_info(m.name) i
		WHERE m.type = 'index' AND m.sql IS NOT NULL GROUP BY m.tbl_name, m.name ORDER BY m.name, i.seqno`)
	if err != nil {
		return s, err
	}
	for _, i := range idx {
		s.indexes[i[0]+"."+i[1]] = i[2]
	}
	return s, nil
}

func postgresSchema(ctx context.Context, db *sql.DB) (schema, error) {
	s := schema{columns: map[string]column{}, indexes: map[string]string{}}
	cols, err := strings2(ctx, db, `SELECT c.table_name, c.column_name, c.data_type, c.is_nullable
		FROM information_schema.columns c JOIN information_schema.tables t
		  ON t.table_schema = c.table_schema AND t.table_name = c.table_name
		WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'`)
	if err != nil {
		return s, err
	}
	for _, c := range cols {
		s.columns[c[0]+"."+c[1]] = column{kind: kindOf(c[2]), notNull: c[3] == "NO"}
	}
	idx, err := strings2(ctx, db, `SELECT t.relname, i.relname, string_agg(a.attname, ',' ORDER BY k.n)
		FROM pg_index x
		JOIN pg_class i ON i.oid = x.indexrelid
		JOIN pg_class t ON t.oid = x.indrelid
		JOIN pg_namespace ns ON ns.oid = t.relnamespace
		CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, n)
		JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
		WHERE ns.nspname = current_schema()
		  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
		GROUP BY t.relname, i.relname`)
	if err != nil {
		return s, err
	}
	for _, i := range idx {
		s.indexes[i[0]+"."+i[1]] = i[2]
	}
	return s, nil
}

// diff lists every way the SQLite schema a and the PostgreSQL schema b
// differ, sorted.
func diff(a, b schema) []string {
	var out []string
	for k, c := range a.columns {
		if d, ok := b.columns[k]; !ok {
			out = append(out, fmt.Sprintf("column %s: only in sqlite", k))
		} else if c != d {
			out = append(out, fmt.Sprintf("column %s: sqlite %+v, postgres %+v", k, c, d))
		}
	}
	for k := range b.columns {
		if _, ok := a.columns[k]; !ok {
			out = append(out, fmt.Sprintf("column %s: only in postgres", k))
		}
	}
	for k, c := range a.indexes {
		if d, ok := b.indexes[k]; !ok {
			out = append(out, fmt.Sprintf("index %s: only in sqlite", k))
		} else if c != d {
			out = append(out, fmt.Sprintf("index %s: sqlite (%s), postgres (%s)", k, c, d))
		}
	}
	for k := range b.indexes {
		if _, ok := a.indexes[k]; !ok {
			out = append(out, fmt.Sprintf("index %s: only in postgres", k))
		}
	}
	sort.Strings(out)
	return out
}

// bothSchemas migrates a new SQLite and a new PostgreSQL database to the
// latest schema, runs extra on each (for the test of the test), and reads
// their schemas back.
func bothSchemas(t *testing.T, extraSQLite, extraPostgres string) (schema, schema) {
	t.Helper()
	ctx := context.Background()
	lite, err := store.Open(ctx, filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer lite.Close()
	post, err := store.Open(ctx, pgtest.NewTestDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer post.Close()
	for db, q := range map[*store.DB]string{lite: extraSQLite, post: extraPostgres} {
		if q == "" {
			continue
		}
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	a, err := sqliteSchema(ctx, lite.DB)
	if err != nil {
		t.Fatal(err)
	}
	b, err := postgresSchema(ctx, post.DB)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.columns) < 100 || len(a.indexes) < 10 {
		t.Fatalf("read %d columns and %d indexes from SQLite: the query is wrong", len(a.columns), len(a.indexes))
	}
	t.Logf("%d columns and %d indexes", len(a.columns), len(a.indexes))
	return a, b
}

// The SQLite and PostgreSQL migration histories are kept by hand, side by
// side; after all of them both databases have the same tables, columns,
// types, nullability and indexes.
func TestSchemaParity(t *testing.T) {
	a, b := bothSchemas(t, "", "")
	for _, d := range diff(a, b) {
		t.Error(d)
	}

	// The test of the test: a migration made on one side only is caught.
	a, b = bothSchemas(t,
		`ALTER TABLE sales ADD COLUMN note TEXT`,
		`CREATE INDEX sales_by_note ON sales (request_id)`)
	want := []string{"column sales.note: only in sqlite", "index sales.sales_by_note: only in postgres"}
	if got := diff(a, b); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("a deliberate mismatch gave %q, want %q", got, want)
	}
}
