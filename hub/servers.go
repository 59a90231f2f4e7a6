package hub

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/frank-postage/frank/hub/psdm"
)

// PSDMServer is one row of the stored list of PSDM servers.
type PSDMServer struct {
	Hub   string `json:"hub"`
	ID    int    `json:"id"`
	MPSDs int    `json:"mpsds"`
	State string `json:"state"` // active or drained
}

// name is this hub's name in the server list.
func (h *Hub) name() string {
	if h.cfg.Name != "" {
		return h.cfg.Name
	}
	host, _ := os.Hostname()
	return host
}

// PSDMServers lists this hub's PSDM servers.
func (h *Hub) PSDMServers(ctx context.Context) ([]PSDMServer, error) {
	rows, err := h.db.QueryContext(ctx, h.db.Rebind(`SELECT hub, id, mpsds, state FROM psdm_servers WHERE hub = ? ORDER BY id`), h.name())
	if err != nil {
		return nil, fmt.Errorf("hub: psdm servers: %w", err)
	}
	defer rows.Close()
	var out []PSDMServer
	for rows.Next() {
		var s PSDMServer
		if err := rows.Scan(&s.Hub, &s.ID, &s.MPSDs, &s.State); err != nil {
			return nil, fmt.Errorf("hub: psdm servers: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// AddPSDMServer adds a server with mpsds MPSDs to this hub's list; the
// running hub starts it within KeyCheckEvery.
func (h *Hub) AddPSDMServer(ctx context.Context, mpsds int) (int, error) {
	if mpsds < 1 || mpsds > psdm.MaxMPSDs {
		return 0, fmt.Errorf("hub: add psdm server: %d MPSDs; want 1 to %d", mpsds, psdm.MaxMPSDs)
	}
	var id int
	err := h.db.QueryRowContext(ctx, h.db.Rebind(`INSERT INTO psdm_servers (hub, id, mpsds, state, created_at)
		SELECT ?, COALESCE(MAX(id), 0) + 1, ?, 'active', ? FROM psdm_servers WHERE hub = ? RETURNING id`),
		h.name(), mpsds, time.Now().UnixMicro(), h.name()).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("hub: add psdm server: %w", err)
	}
	return id, nil
}

// DrainPSDMServer marks a server drained; the running hub stops giving it
// stamps, lets it finish and returns its MPSDs within KeyCheckEvery.
func (h *Hub) DrainPSDMServer(ctx context.Context, id int) error {
	all, err := h.PSDMServers(ctx)
	if err != nil {
		return err
	}
	active := 0
	for _, s := range all {
		if s.State == "active" {
			active++
		}
	}
	i := slices.IndexFunc(all, func(s PSDMServer) bool { return s.ID == id && s.State == "active" })
	switch {
	case i < 0:
		return fmt.Errorf("hub: drain psdm server %d: no such active server", id)
	case active == 1:
		return fmt.Errorf("hub: drain psdm server %d: it is the last active one; add another first", id)
	}
	_, err = h.db.ExecContext(ctx, h.db.Rebind(`UPDATE psdm_servers SET state = 'drained' WHERE hub = ? AND id = ?`), h.name(), id)
	if err != nil {
		return fmt.Errorf("hub: drain psdm server %d: %w", id, err)
	}
	return nil
}

// activeServers is the list the pool should run, made from the
// configuration on a hub's first start.
func (h *Hub) activeServers(ctx context.Context) ([]psdm.Server, error) {
	all, err := h.PSDMServers(ctx)
	if err != nil {
		return nil, err
	}
	if len(all) == 0 {
		for range h.cfg.Workers {
			if _, err := h.AddPSDMServer(ctx, max(h.cfg.MPSDs, 1)); err != nil {
				return nil, err
			}
		}
		if all, err = h.PSDMServers(ctx); err != nil {
			return nil, err
		}
	}
	var out []psdm.Server
	for _, s := range all {
		if s.State == "active" {
			out = append(out, psdm.Server{ID: s.ID, MPSDs: s.MPSDs})
		}
	}
	return out, nil
}

// followServers starts the servers added to the list and drains the ones
// drained in it.
func (h *Hub) followServers(ctx context.Context) {
	want, err := h.activeServers(ctx)
	if err != nil {
		h.log.Warn("PSDM server list not read", "err", err)
		return
	}
	running := h.pool.Servers()
	for _, sv := range want {
		if !slices.Contains(running, sv.ID) {
			if err := h.pool.Add(ctx, sv); err != nil {
				h.log.Error("PSDM server not started", "server", sv.ID, "err", err)
			}
		}
	}
	for _, id := range running {
		if !slices.ContainsFunc(want, func(sv psdm.Server) bool { return sv.ID == id }) {
			if err := h.pool.Drain(ctx, id); err != nil {
				h.log.Error("PSDM server not drained", "server", id, "err", err)
			}
		}
	}
}
