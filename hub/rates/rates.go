// Package rates holds the hub's rate tables. Each table is a versioned data
// file with an effective date; the current table is the newest one whose
// date has come, so a table loaded ahead of a price change takes over on its
// day without a restart. Letter weights: 3.5 oz is 99,223 mg; 1 oz is
// 28,349 mg; 13 oz is 368,543 mg (protocol.OunceNg is exact).
package rates

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

//go:embed tables/*.json
var builtin embed.FS

// Book is a set of rate tables, safe for concurrent use.
type Book struct {
	mu     sync.RWMutex
	tables []protocol.RateTable // sorted by effective date
	shared map[string]bool      // versions added from the cluster (Share)
}

// Reload reads dir again (LoadDir), so that a table dropped there ahead of
// its date is picked up without a restart. A version already loaded must
// not change: kiosks priced on it. The cluster's copy of a version wins
// over the directory's (Share). On any error the book is left as it was.
func (b *Book) Reload(dir string) error {
	nb, err := LoadDir(dir)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, have := range b.tables {
		for _, t := range nb.tables {
			if t.Version == have.Version && !b.shared[have.Version] && !reflect.DeepEqual(t, have) {
				return fmt.Errorf("rates: reload: table %s changed; publish a new version instead", t.Version)
			}
		}
	}
	// The cluster's tables stay, and its copies win: the directory holds
	// only this hub's.
	for _, have := range b.tables {
		if !b.shared[have.Version] {
			continue
		}
		if i := slices.IndexFunc(nb.tables, func(t protocol.RateTable) bool { return t.Version == have.Version }); i >= 0 {
			nb.tables[i] = have
		} else {
			nb.tables = append(nb.tables, have)
		}
	}
	sort.SliceStable(nb.tables, func(i, j int) bool { return nb.tables[i].Effective < nb.tables[j].Effective })
	b.tables = nb.tables
	return nil
}

// Share makes the book and the cluster's agree: the tables of db that the
// book lacks are added to it, and the book's that db lacks are added to db
// for the other hubs, by hub. A version that db holds with other contents
// is an error, and the book takes db's: two hubs pricing one version
// differently refuse each other's kiosks' sales. Every hub shares at start and then every minute, so a table
// dropped into one hub's directory ahead of its date reaches all of them.
func (b *Book) Share(ctx context.Context, db *store.DB, hub string, now time.Time) error {
	rows, err := db.QueryContext(ctx, `SELECT version, body FROM rate_tables`)
	if err != nil {
		return fmt.Errorf("rates: share: %w", err)
	}
	theirs := map[string]protocol.RateTable{}
	for rows.Next() {
		var version, body string
		if err := rows.Scan(&version, &body); err != nil {
			rows.Close()
			return fmt.Errorf("rates: share: %w", err)
		}
		var t protocol.RateTable
		if err := json.Unmarshal([]byte(body), &t); err != nil {
			rows.Close()
			return fmt.Errorf("rates: share: table %s in the database does not read: %w", version, err)
		} else if t.Version != version {
			rows.Close()
			return fmt.Errorf("rates: share: table %s in the database says it is %s", version, t.Version)
		}
		theirs[version] = t
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("rates: share: %w", err)
	}
	b.mu.RLock()
	ours := slices.Clone(b.tables)
	b.mu.RUnlock()
	var errs []error
	for _, t := range ours {
		if have, ok := theirs[t.Version]; ok {
			if !reflect.DeepEqual(have, t) {
				errs = append(errs, fmt.Errorf("rates: share: table %s differs from the one another hub published first, which this hub prices by too; publish a new version instead", t.Version))
				b.mu.Lock()
				if i := slices.IndexFunc(b.tables, func(o protocol.RateTable) bool { return o.Version == have.Version }); i >= 0 {
					b.tables[i] = have
					sort.SliceStable(b.tables, func(i, j int) bool { return b.tables[i].Effective < b.tables[j].Effective })
				}
				if b.shared == nil {
					b.shared = map[string]bool{}
				}
				b.shared[have.Version] = true
				b.mu.Unlock()
			}
			delete(theirs, t.Version)
			continue
		}
		body, err := json.Marshal(t)
		if err != nil {
			return fmt.Errorf("rates: share %s: %w", t.Version, err)
		}
		if _, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO rate_tables (version, body, added_by, added_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (version) DO NOTHING`), t.Version, string(body), hub, now.UnixMicro()); err != nil {
			return fmt.Errorf("rates: share %s: %w", t.Version, err)
		}
	}
	for _, t := range theirs {
		if err := b.Add(t); err != nil {
			errs = append(errs, fmt.Errorf("rates: share: %w", err))
			continue
		}
		b.mu.Lock()
		if b.shared == nil {
			b.shared = map[string]bool{}
		}
		b.shared[t.Version] = true
		b.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Builtin returns the tables shipped with the hub.
func Builtin() (*Book, error) {
	return load(builtin, "tables")
}

// LoadDir adds the *.json tables in dir to the built-in ones.
func LoadDir(dir string) (*Book, error) {
	b, err := Builtin()
	if err != nil {
		return nil, err
	}
	if dir == "" {
		return b, nil
	}
	// Added to the built-in ones file by file, so that a version loaded
	// twice is an error that names its file.
	if err := b.addFiles(os.DirFS(dir), "."); err != nil {
		return nil, err
	}
	return b, nil
}

func load(fsys fs.FS, dir string) (*Book, error) {
	b := &Book{}
	if err := b.addFiles(fsys, dir); err != nil {
		return nil, err
	}
	return b, nil
}

// addFiles adds the *.json tables in dir of fsys.
func (b *Book) addFiles(fsys fs.FS, dir string) error {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return fmt.Errorf("rates: load: %w", err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := fs.ReadFile(fsys, filepath.ToSlash(filepath.Join(dir, e.Name())))
		if err != nil {
			return fmt.Errorf("rates: load %s: %w", e.Name(), err)
		}
		var t protocol.RateTable
		if err := json.Unmarshal(data, &t); err != nil {
			return fmt.Errorf("rates: load %s: %w", e.Name(), err)
		}
		if err := b.Add(t); err != nil {
			return fmt.Errorf("rates: load %s: %w", e.Name(), err)
		}
	}
	return nil
}

// Add validates t and adds it. Versions are unique.
func (b *Book) Add(t protocol.RateTable) error {
	if err := t.Validate(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, have := range b.tables {
		if have.Version == t.Version {
			return fmt.Errorf("rates: version %s loaded twice", t.Version)
		}
	}
	b.tables = append(b.tables, t)
	sort.SliceStable(b.tables, func(i, j int) bool { return b.tables[i].Effective < b.tables[j].Effective })
	return nil
}

// Current returns the table in force on the date of now.
func (b *Book) Current(now time.Time) (protocol.RateTable, error) {
	today := now.Format(time.DateOnly)
	b.mu.RLock()
	defer b.mu.RUnlock()
	for i := len(b.tables) - 1; i >= 0; i-- {
		if b.tables[i].Effective <= today {
			return b.tables[i], nil
		}
	}
	return protocol.RateTable{}, fmt.Errorf("rates: no table is in force on %s", today)
}
