package lanes_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// writeSQL finds the table each INSERT, UPDATE or DELETE writes (not the
// UPDATE of an upsert's ON CONFLICT, which writes the table inserted into).
var writeSQL = regexp.MustCompile("(?i)(?:^|[`\"\\s(])(insert\\s+into|(?:^|[^o]\\s)update|delete\\s+from)\\s+([a-z_]+)")

// batchInsert finds the table of a multi-row insert built through
// store.Batch (the ledger's commit pipeline), which writes no SQL text.
var batchInsert = regexp.MustCompile(`\.Insert\("([a-z_]+)",`)

// Each table is written by one package, its owner; another package that
// must change it in its own transaction commits a store.Write the owner
// hands it (payments.Authorized, stock.MarkUsed, fleet.AddStore,
// commands.ExpireRollout).
func TestOneWriterPerTable(t *testing.T) {
	writers := map[string][]string{}
	err := filepath.WalkDir("../../hub", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		pkg := filepath.Dir(strings.TrimPrefix(path, "../../"))
		found := writeSQL.FindAllStringSubmatch(string(b), -1)
		for _, m := range batchInsert.FindAllStringSubmatch(string(b), -1) {
			found = append(found, []string{m[0], "insert into", m[1]})
		}
		for _, m := range found {
			table := strings.ToLower(m[2])
			if table == "set" || pkg == "hub/store" { // the store's own bookkeeping: leases, claims' plumbing
				continue
			}
			if !slices.Contains(writers[table], pkg) {
				writers[table] = append(writers[table], pkg)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(writers) < 20 {
		t.Fatalf("found writes to %d tables: the pattern is wrong", len(writers))
	}
	for table, pkgs := range writers {
		if len(pkgs) > 1 {
			t.Errorf("table %s is written by %v; give it one owner", table, pkgs)
		}
	}
}
