package hub

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/frank-postage/frank/hub/claims"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// HearsPeers says whether the hub hears the other hubs' notifications and
// has read the heartbeats it missed before: until then it judges no kiosk
// silent, and silence counts from that read.
func (h *Hub) HearsPeers() bool {
	h.peers.mu.Lock()
	defer h.peers.mu.Unlock()
	return h.peers.listening && h.peers.synced
}

// StaffDeskOn is the staff desk another hub process would run on db: its
// own limiters' memory and its own claims, named hub.
func StaffDeskOn(h *Hub, db *store.DB, hub string) interface {
	Answer(ctx context.Context, kioskID string, payload []byte) ([]byte, *protocol.Error)
} {
	d := newStaffDesk(h)
	d.window.DB, d.day.DB = db, db
	d.claims = claims.New(db, hub, h.clockNow)
	return d
}

// CheckClock compares h's clock, as now reads it, with the database's.
func CheckClock(h *Hub, now func() time.Time) { h.checkClock(context.Background(), now) }

// RenewTLS runs the hub's hourly check of its own certificates.
func RenewTLS(h *Hub, ctx context.Context) { h.renewTLS(ctx) }

// ServerCertificate is the TLS server certificate the hub serves now.
func ServerCertificate(h *Hub) *x509.Certificate {
	h.tls.mu.RLock()
	defer h.tls.mu.RUnlock()
	return h.tls.server.Leaf
}
