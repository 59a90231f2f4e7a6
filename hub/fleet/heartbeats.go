package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// Heartbeat is a kiosk's last heartbeat as the database holds it.
type Heartbeat struct {
	Hub       string // the hub that received it
	At        time.Time
	Telemetry *protocol.Telemetry
}

// SaveHeartbeat stores the heartbeat hub received at at, for the other hubs.
func (r *Registry) SaveHeartbeat(ctx context.Context, hub string, at time.Time, t *protocol.Telemetry) error {
	b, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("fleet: save heartbeat: %w", err)
	}
	_, err = r.db.SoftExec(ctx, `INSERT INTO kiosk_presence (kiosk_id, hub, last_seen, telemetry) VALUES (?, ?, ?, ?)
		ON CONFLICT (kiosk_id) DO UPDATE SET hub = excluded.hub, last_seen = excluded.last_seen, telemetry = excluded.telemetry
		WHERE kiosk_presence.last_seen <= excluded.last_seen`, t.KioskID, hub, at.UnixMicro(), string(b))
	if err != nil {
		return fmt.Errorf("fleet: save heartbeat of %s: %w", t.KioskID, err)
	}
	note, err := json.Marshal(heartbeatNote{Hub: hub, At: at.UnixMicro(), Telemetry: b})
	if err != nil {
		return fmt.Errorf("fleet: save heartbeat: %w", err)
	}
	return r.db.Notify(ctx, store.HeartbeatChannel, string(note))
}

// heartbeatNote is a heartbeat as told on store.HeartbeatChannel.
type heartbeatNote struct {
	Hub       string          `json:"hub"`
	At        int64           `json:"at"` // µs since the epoch
	Telemetry json.RawMessage `json:"telemetry"`
}

// DecodeHeartbeatNote reads a notification on store.HeartbeatChannel.
func DecodeHeartbeatNote(payload string) (Heartbeat, error) {
	var n heartbeatNote
	if err := json.Unmarshal([]byte(payload), &n); err != nil {
		return Heartbeat{}, fmt.Errorf("fleet: heartbeat note: %w", err)
	}
	if n.Hub == "" || n.At <= 0 {
		return Heartbeat{}, fmt.Errorf("fleet: heartbeat note: no hub or time")
	}
	t, err := protocol.DecodeTelemetry(n.Telemetry)
	if err != nil {
		return Heartbeat{}, fmt.Errorf("fleet: heartbeat note: %w", err)
	}
	return Heartbeat{Hub: n.Hub, At: time.UnixMicro(n.At), Telemetry: t}, nil
}

// Heartbeats returns the last heartbeats received after since by hubs
// other than notHub.
func (r *Registry) Heartbeats(ctx context.Context, since time.Time, notHub string) ([]Heartbeat, error) {
	rows, err := r.db.QueryContext(ctx, r.db.Rebind(`SELECT hub, last_seen, telemetry FROM kiosk_presence WHERE last_seen > ? AND hub <> ?`),
		since.UnixMicro(), notHub)
	if err != nil {
		return nil, fmt.Errorf("fleet: heartbeats: %w", err)
	}
	defer rows.Close()
	var out []Heartbeat
	for rows.Next() {
		var h Heartbeat
		var at int64
		var tele string
		if err := rows.Scan(&h.Hub, &at, &tele); err != nil {
			return nil, fmt.Errorf("fleet: heartbeats: %w", err)
		}
		t, err := protocol.DecodeTelemetry([]byte(tele))
		if err != nil {
			continue // written by a newer hub; its kiosk is still seen by that hub
		}
		h.At, h.Telemetry = time.UnixMicro(at), t
		out = append(out, h)
	}
	return out, rows.Err()
}
