package hub

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/frank-postage/frank/hub/metrics"
	"github.com/frank-postage/frank/hub/store"
)

// activityStore keeps the console's activity charts in the database, a
// row per hub and finished minute.
type activityStore struct {
	db  *store.DB
	hub string
}

// save writes finished minutes, replacing what this hub wrote for them,
// and forgets minutes older than two days.
func (s activityStore) save(ctx context.Context, ms []metrics.Minute) error {
	if len(ms) == 0 {
		return nil
	}
	return s.db.InTx(ctx, func(tx *sql.Tx) error {
		for _, m := range ms {
			hist := make([]string, len(m.Hist))
			for i, c := range m.Hist {
				hist[i] = strconv.FormatUint(uint64(c), 10)
			}
			if _, err := tx.ExecContext(ctx, s.db.Rebind(`INSERT INTO activity (hub, minute, ok, rejected, sum_us, max_us, hist) VALUES (?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT (hub, minute) DO UPDATE SET ok = excluded.ok, rejected = excluded.rejected, sum_us = excluded.sum_us,
				max_us = excluded.max_us, hist = excluded.hist`),
				s.hub, m.At, m.OK, m.Rejected, m.Sum.Microseconds(), m.Max.Microseconds(), strings.Join(hist, ",")); err != nil {
				return fmt.Errorf("hub: save activity: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, s.db.Rebind(`DELETE FROM activity WHERE minute < ?`), ms[len(ms)-1].At-2*24*60); err != nil {
			return fmt.Errorf("hub: prune activity: %w", err)
		}
		return nil
	})
}

// load reads every hub's minutes from since on.
func (s activityStore) load(ctx context.Context, since int64) ([]metrics.Minute, error) {
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(`SELECT hub, minute, ok, rejected, sum_us, max_us, hist FROM activity WHERE minute >= ?`), since)
	if err != nil {
		return nil, fmt.Errorf("hub: load activity: %w", err)
	}
	defer rows.Close()
	var out []metrics.Minute
	for rows.Next() {
		var m metrics.Minute
		var sum, mx int64
		var hist string
		if err := rows.Scan(&m.Hub, &m.At, &m.OK, &m.Rejected, &sum, &mx, &hist); err != nil {
			return nil, fmt.Errorf("hub: load activity: %w", err)
		}
		m.Sum, m.Max = time.Duration(sum)*time.Microsecond, time.Duration(mx)*time.Microsecond
		for _, f := range strings.Split(hist, ",") {
			c, err := strconv.ParseUint(f, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("hub: load activity: minute %d: %w", m.At, err)
			}
			m.Hist = append(m.Hist, uint32(c))
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("hub: load activity: %w", err)
	}
	return out, nil
}
