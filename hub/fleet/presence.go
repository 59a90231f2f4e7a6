package fleet

import (
	"slices"
	"sync"
	"time"

	"github.com/frank-postage/frank/protocol"
)

// Presence tracks which kiosks are online. A kiosk is online from its
// retained "online" status or any heartbeat, and offline on its last will
// or when heartbeats stop: a dead link can go unnoticed by the broker for
// one and a half keepalives, so heartbeats are the hub's own evidence.
type Presence struct {
	mu      sync.Mutex
	now     func() time.Time
	kiosks  map[string]*KioskState
	history map[string][]protocol.Telemetry // the last HistoryLen heartbeats of each kiosk
	changed chan struct{}                   // closed and replaced on every change
}

// HistoryLen is how many heartbeats of each kiosk are kept for its page.
const HistoryLen = 60

// KioskState is what the hub last knew of a kiosk.
type KioskState struct {
	ID        string              `json:"kiosk_id"`
	Online    bool                `json:"online"`
	Since     time.Time           `json:"since"`     // when Online last changed
	LastSeen  time.Time           `json:"last_seen"` // last status or heartbeat
	Telemetry *protocol.Telemetry `json:"telemetry,omitempty"`
}

// NewPresence returns an empty tracker; now may be nil.
func NewPresence(now func() time.Time) *Presence {
	if now == nil {
		now = time.Now
	}
	return &Presence{now: now, kiosks: map[string]*KioskState{}, history: map[string][]protocol.Telemetry{}, changed: make(chan struct{})}
}

// Changed returns a channel closed at the next change of any kiosk, for
// pages that follow the fleet live.
func (p *Presence) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// notify wakes the watchers; p.mu is held.
func (p *Presence) notify() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// History returns a kiosk's recent heartbeats, newest last.
func (p *Presence) History(id string) []protocol.Telemetry {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.history[id])
}

func (p *Presence) state(id string) *KioskState {
	s := p.kiosks[id]
	if s == nil {
		s = &KioskState{ID: id}
		p.kiosks[id] = s
	}
	return s
}

func (p *Presence) set(s *KioskState, online bool, now time.Time) {
	if s.Online != online || s.Since.IsZero() {
		s.Online, s.Since = online, now
	}
}

// Online records a kiosk's "online" status.
func (p *Presence) Online(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	s := p.state(id)
	p.set(s, true, now)
	s.LastSeen = now
	p.notify()
}

// Offline records a kiosk's last will or "offline" status, and reports
// whether the kiosk was online, or not known, before it.
func (p *Presence) Offline(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.state(id)
	changed := s.Online || s.Since.IsZero()
	p.set(s, false, p.now())
	p.notify()
	return changed
}

// Heartbeat records a kiosk's telemetry.
func (p *Presence) Heartbeat(t *protocol.Telemetry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	s := p.state(t.KioskID)
	p.set(s, true, now)
	s.LastSeen, s.Telemetry = now, t
	h := append(p.history[t.KioskID], *t)
	if len(h) > HistoryLen {
		h = slices.Clone(h[len(h)-HistoryLen:]) // a fresh array, so the old one is freed
	}
	p.history[t.KioskID] = h
	p.notify()
}

// Sweep marks offline every online kiosk not heard from in silence, and
// returns the ones it marked.
func (p *Presence) Sweep(silence time.Duration) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	var gone []string
	for id, s := range p.kiosks {
		if s.Online && now.Sub(s.LastSeen) > silence {
			p.set(s, false, now)
			gone = append(gone, id)
		}
	}
	if len(gone) > 0 {
		p.notify()
	}
	slices.Sort(gone)
	return gone
}

// List returns every kiosk heard of, by id.
func (p *Presence) List() []KioskState {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]KioskState, 0, len(p.kiosks))
	for _, s := range p.kiosks {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b KioskState) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}

// Seen merges a heartbeat another hub received at at: the kiosk is online
// if it was heard after it went offline, and its telemetry is the newest.
func (p *Presence) Seen(t *protocol.Telemetry, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.state(t.KioskID)
	if !at.After(s.LastSeen) {
		return
	}
	if !s.Online && at.After(s.Since) {
		p.set(s, true, at)
	}
	s.LastSeen, s.Telemetry = at, t
	h := append(p.history[t.KioskID], *t)
	if len(h) > HistoryLen {
		h = slices.Clone(h[len(h)-HistoryLen:])
	}
	p.history[t.KioskID] = h
	p.notify()
}
