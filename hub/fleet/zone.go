package fleet

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"
	_ "time/tzdata" // a hub on a host without zoneinfo still knows every store's zone
)

// zones caches the locations loaded by name: LoadLocation reads and parses
// the zone's data each time.
var zones sync.Map // name -> *time.Location

// LoadZone returns the IANA time zone name ("America/Los_Angeles"). The
// empty name and "Local" are refused: a store's zone must not change with
// the host a hub runs on.
func LoadZone(name string) (*time.Location, error) {
	if l, ok := zones.Load(name); ok {
		return l.(*time.Location), nil
	}
	if name == "" || name == "Local" {
		return nil, fmt.Errorf("fleet: time zone %q: want an IANA name such as America/New_York", name)
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("fleet: time zone %q: %w", name, err)
	}
	zones.Store(name, l)
	return l, nil
}

// SetStoreZone records the time zone a store sells in: its stamps carry
// its date, and a new rate table takes over at its midnight.
func (r *Registry) SetStoreZone(ctx context.Context, storeID, name string) error {
	if _, err := LoadZone(name); err != nil {
		return fmt.Errorf("fleet: store %s: %w", storeID, err)
	}
	err := r.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, r.db.Rebind(`UPDATE stores SET time_zone = ? WHERE id = ?`), name, storeID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return fmt.Errorf("no store %s", storeID)
		}
		// As for a ZIP: every hub reads its kiosks again.
		_, err = tx.ExecContext(ctx, `UPDATE kiosks_version SET v = v + 1 WHERE id = 1`)
		return err
	})
	if err != nil {
		return fmt.Errorf("fleet: store %s: %w", storeID, err)
	}
	r.forgetAll()
	return nil
}

// Place is where a kiosk in service sells: its store, and the time zone
// the store sells in ("" is the hub's own, for stores that have none).
type Place struct{ Store, Zone string }

// KioskPlaces maps each kiosk in service to its Place.
func (r *Registry) KioskPlaces(ctx context.Context) (map[string]Place, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT k.kiosk_id, k.store, COALESCE(s.time_zone, '') FROM kiosks k LEFT JOIN stores s ON s.id = k.store
		WHERE k.store IS NOT NULL AND k.retired_at IS NULL`)
	if err != nil {
		return nil, fmt.Errorf("fleet: kiosk places: %w", err)
	}
	defer rows.Close()
	out := map[string]Place{}
	for rows.Next() {
		var id string
		var p Place
		if err := rows.Scan(&id, &p.Store, &p.Zone); err != nil {
			return nil, fmt.Errorf("fleet: kiosk places: %w", err)
		}
		out[id] = p
	}
	return out, rows.Err()
}

// column reads rows of one text column, and closes them.
func column(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
