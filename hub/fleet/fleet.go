// Package fleet is the hub's register of kiosks. Each kiosk has a numeric
// user id that goes into the indicium's user field.
package fleet

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/frank-postage/frank/hub/store"
)

// Registry knows the kiosks.
type Registry struct {
	db  *store.DB
	mu  sync.Mutex
	ids map[string]uint64 // a kiosk's number never changes once given
}

// New returns the registry on db.
func New(db *store.DB) *Registry { return &Registry{db: db, ids: map[string]uint64{}} }

// UserID returns a kiosk's numeric id, enrolling the kiosk on first sight.
func (r *Registry) UserID(ctx context.Context, kioskID string) (uint64, error) {
	r.mu.Lock()
	id, ok := r.ids[kioskID]
	r.mu.Unlock()
	if ok {
		return id, nil
	}
	id, err := r.userID(ctx, kioskID)
	if err == nil {
		r.mu.Lock()
		r.ids[kioskID] = id
		r.mu.Unlock()
	}
	return id, err
}

func (r *Registry) userID(ctx context.Context, kioskID string) (uint64, error) {
	for range 3 {
		var id uint64
		err := r.db.QueryRowContext(ctx, r.db.Rebind(`SELECT user_id FROM kiosks WHERE kiosk_id = ?`), kioskID).Scan(&id)
		if err == nil {
			return id, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return 0, fmt.Errorf("fleet: user id of %s: %w", kioskID, err)
		}
		// A concurrent enrolment may take the same number; the unique
		// index refuses one of them and the loop reads the winner.
		_, err = r.db.ExecContext(ctx, r.db.Rebind(`INSERT INTO kiosks (kiosk_id, user_id, created_at)
			SELECT ?, COALESCE(MAX(user_id), 0) + 1, ? FROM kiosks`), kioskID, time.Now().UnixMicro())
		if err != nil && !isConflict(err) {
			return 0, fmt.Errorf("fleet: enrol %s: %w", kioskID, err)
		}
	}
	return 0, fmt.Errorf("fleet: enrol %s: lost the race three times", kioskID)
}

func isConflict(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "UNIQUE constraint") || strings.Contains(msg, "duplicate key")
}
