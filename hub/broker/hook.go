package broker

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/time/rate"

	"github.com/frank-postage/frank/hub/netlimit"
	"github.com/frank-postage/frank/protocol"
)

// authHook authenticates clients and confines kiosks to their topics.
type authHook struct {
	mqtt.HookBase
	cfg Config
	log *slog.Logger
	srv *mqtt.Server

	mu       sync.Mutex
	stamps   map[*mqtt.Client]string            // a connected kiosk's credential stamp
	certs    map[*mqtt.Client]*x509.Certificate // the certificate a client connected with
	kiosks   map[string]*kioskLimits            // budgets by kiosk id, kept across its connections
	failures map[string]*rate.Limiter           // failed logins by address
	refused  map[string]int64                   // by reason
	revoked  map[string]bool                    // certificate serials the CA revoked
}

func (h *authHook) ID() string { return "frank-auth" }

// kioskLimits are one kiosk id's budgets: its publishes and its connects.
// They are kept by id, not by connection, so a kiosk that reconnects goes
// on with what it had left rather than a fresh burst. An entry is dropped
// once every budget is full again, when a new one would be the same.
type kioskLimits struct {
	msgs     *rate.Limiter // nil: no limit
	connects *rate.Limiter // nil: no limit
}

func (l *kioskLimits) full(now time.Time) bool {
	full := func(r *rate.Limiter) bool { return r == nil || r.TokensAt(now) >= float64(r.Burst()) }
	return full(l.msgs) && full(l.connects)
}

func (h *authHook) now() time.Time {
	if h.cfg.now != nil {
		return h.cfg.now()
	}
	return time.Now()
}

// limitsLocked returns kiosk id's budgets, full ones if it has none; h.mu
// is held.
func (h *authHook) limitsLocked(id string) *kioskLimits {
	l := h.kiosks[id]
	if l == nil {
		l = &kioskLimits{}
		if h.cfg.KioskRate > 0 {
			l.msgs = rate.NewLimiter(rate.Limit(h.cfg.KioskRate), h.cfg.KioskBurst)
		}
		if n := h.cfg.KioskConnects; n > 0 {
			l.connects = rate.NewLimiter(rate.Every(time.Minute/time.Duration(n)), n)
		}
		h.kiosks[id] = l
	}
	return l
}

// mayConnect reports whether kiosk id has a connect left. It only looks:
// a connect is spent once authenticated (connected), so a stranger who
// names the kiosk cannot spend its budget and lock it out.
func (h *authHook) mayConnect(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.kiosks[id]
	return l == nil || l.connects == nil || l.connects.TokensAt(h.now()) >= 1
}

// connected spends one of kiosk id's connects and starts its publish
// budget if it has none. The spend is a reservation, which may leave a
// debt: connects that raced past mayConnect together still each pay.
func (h *authHook) connected(id string) {
	if h.cfg.KioskRate <= 0 && h.cfg.KioskConnects <= 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if l := h.limitsLocked(id); l.connects != nil {
		l.connects.ReserveN(h.now(), 1)
	}
}

// prune drops the budgets that are full again: the map holds only kiosks
// that spent something lately.
func (h *authHook) prune() {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, l := range h.kiosks {
		if l.full(now) {
			delete(h.kiosks, id)
		}
	}
}

func (h *authHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnDisconnect,
		mqtt.OnSubscribe, mqtt.OnUnsubscribe, mqtt.OnPacketRead:
		return true
	}
	return false
}

// isHub reports whether an authenticated user is a hub: the hub's own
// password user, or a certificate the CA issued to a hub. No kiosk id
// starts with the hubs' prefix.
func (h *authHook) isHub(user []byte) bool {
	return strings.HasPrefix(string(user), protocol.HubPrefix)
}

// peerCert is the certificate a TLS client connected with, verified
// against the device CA, or nil.
func peerCert(cl *mqtt.Client) *x509.Certificate {
	c, ok := cl.Net.Conn.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return nil
	}
	cs := c.ConnectionState()
	if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return nil
	}
	return cs.PeerCertificates[0]
}

// verifyConnection refuses, during the TLS handshake, a certificate the
// CA has revoked.
func (h *authHook) verifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil // no certificate: a password login, if the listener allows one
	}
	serial := fmt.Sprintf("%x", cs.PeerCertificates[0].SerialNumber)
	h.mu.Lock()
	bad := h.revoked[serial]
	h.mu.Unlock()
	if bad {
		h.count("revoked_cert")
		return fmt.Errorf("broker: certificate %s is revoked", serial)
	}
	return nil
}

// refreshRevoked rereads the CA's revocations.
func (h *authHook) refreshRevoked(ctx context.Context) {
	if h.cfg.Revoked == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := h.cfg.Revoked.Revoked(ctx)
	if err != nil {
		h.log.Error("revoked certificates not reread", "err", err)
		return
	}
	h.mu.Lock()
	h.revoked = r
	h.mu.Unlock()
}

// OnConnect runs before authentication. It refuses, as not authorized, a
// kiosk whose last will names a topic the kiosk may not publish on (a will
// is published by the broker on the client's behalf, after the ACL would
// have looked), and makes a kiosk's client id its user name, as mosquitto's
// use_username_as_clientid does: another kiosk's id cannot be taken, and
// older firmware that sent "frank-kiosk-ID" keeps working.
func (h *authHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	user := pk.Connect.Username
	if cert := peerCert(cl); cert != nil {
		// The certificate names the client, whatever it sent, as
		// mosquitto's use_identity_as_username does.
		user = []byte(cert.Subject.CommonName)
		cl.Properties.Username = user
		if h.isHub(user) {
			if !strings.HasPrefix(cl.ID, protocol.HubPrefix) {
				cl.ID = string(user)
			}
			return nil
		}
	} else if h.isHub(user) {
		return nil
	}
	if pk.Connect.WillFlag && !kioskWillMay(string(user), pk.Connect.WillTopic, pk.Connect.WillRetain) {
		h.count("will_topic")
		h.log.Warn("broker refused a client: last will on a topic it may not use", "user", string(user), "remote", cl.Net.Remote,
			"will_topic", pk.Connect.WillTopic, "retain", pk.Connect.WillRetain)
		code := packets.ErrNotAuthorized
		if pk.ProtocolVersion < 5 {
			code = packets.Err3NotAuthorized // mochi maps only some codes down to 3.1.1's
		}
		h.srv.SendConnack(cl, code, false, nil)
		return packets.ErrNotAuthorized
	}
	if protocol.ValidKioskID(string(user)) && !h.mayConnect(string(user)) {
		// A real kiosk reconnects after a lost link or a hub restart, not
		// in a loop; a transient code, so it tries again later.
		h.refuse(cl, string(user), "connect_rate")
		code := packets.ErrConnectionRateExceeded
		if pk.ProtocolVersion < 5 {
			code = packets.ErrServerUnavailable // 3.1.1 has no rate code; mochi sends this one down as 3, as when full
		}
		h.srv.SendConnack(cl, code, false, nil)
		return code
	}
	if len(user) > 0 {
		cl.ID = string(user)
	}
	return nil
}

func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if cert := peerCert(cl); cert != nil {
		user := cert.Subject.CommonName
		if !h.isHub([]byte(user)) && !protocol.ValidKioskID(user) {
			h.refuse(cl, user, "unknown_user")
			return false
		}
		h.mu.Lock()
		h.certs[cl] = cert
		h.mu.Unlock()
		if !h.isHub([]byte(user)) {
			h.connected(user)
		}
		return true
	}
	user, pass := string(pk.Connect.Username), pk.Connect.Password
	if h.isHub(pk.Connect.Username) {
		ok := h.cfg.HubUser != "" && user == h.cfg.HubUser && subtle.ConstantTimeCompare(pass, []byte(h.cfg.HubPassword)) == 1
		if !ok {
			h.refuse(cl, user, "bad_password")
		}
		return ok
	}
	if !h.cfg.Passwords {
		h.refuse(cl, user, "no_certificate")
		return false
	}
	if !protocol.ValidKioskID(user) || h.cfg.Kiosks == nil {
		h.refuse(cl, user, "unknown_user")
		return false
	}
	// Counted by source, as the connections are: one IPv6 subscriber
	// holds a whole /64, and must not get a fresh budget per address.
	ip := clientSource(cl)
	try := h.reserveTry(ip)
	slow := try != nil
	stamp, ok := h.cfg.Kiosks.Authenticate(user, string(pass), slow)
	if !ok {
		if !slow {
			h.refuse(cl, user, "auth_rate")
			return false
		}
		h.refuse(cl, user, "bad_password") // the failed try stays spent
		return false
	}
	if try != nil {
		try.Cancel() // a right password costs the address nothing
	}
	h.mu.Lock()
	h.stamps[cl] = stamp
	h.mu.Unlock()
	h.connected(user)
	return true
}

func (h *authHook) refuse(cl *mqtt.Client, user, why string) {
	// Logged once per fifty: a stranger's spray must not fill the disk.
	if h.count(why)%50 == 1 {
		h.log.Warn("broker refused a client", "user", user, "remote", cl.Net.Remote, "reason", why)
	}
}

// clientSource is the source (netlimit.SourceOf) that cl connected from.
func clientSource(cl *mqtt.Client) string {
	if cl.Net.Conn != nil {
		return netlimit.SourceOf(cl.Net.Conn.RemoteAddr())
	}
	return remoteHost(cl.Net.Remote)
}

// reserveTry spends one of ip's failed logins before a slow check, or
// returns nil if it has none left. It is spent before the bcrypt, not after
// it failed: the connections one address holds at once would otherwise all
// find one left together, and each pay for bcrypt. A right password gives
// it back (Cancel).
func (h *authHook) reserveTry(ip string) *rate.Reservation {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.failures) > 10_000 { // a spray of addresses: forget the recovered ones
		for k, l := range h.failures {
			if l.Tokens() >= float64(h.cfg.AuthFailures) {
				delete(h.failures, k)
			}
		}
	}
	l := h.failures[ip]
	if l == nil {
		l = rate.NewLimiter(rate.Every(6*time.Second), h.cfg.AuthFailures)
		h.failures[ip] = l
	}
	r := l.Reserve()
	if !r.OK() || r.Delay() > 0 {
		r.Cancel()
		return nil
	}
	return r
}

// OnACLCheck confines a kiosk to its topics. mochi asks it too before
// each message it sends a kiosk (write false), and a kiosk holding
// KioskInflight messages unacknowledged is sent no more until it
// acknowledges some: the broker keeps a copy of each, for as long as the
// session lasts.
func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if h.isHub(cl.Properties.Username) {
		return true
	}
	if !KioskMay(string(cl.Properties.Username), topic, write) {
		h.count("acl")
		return false
	}
	if !write && h.cfg.KioskInflight > 0 && cl.State.Inflight.Len() >= h.cfg.KioskInflight {
		if h.count("inflight")%100 == 1 {
			h.log.Warn("kiosk not acknowledging; messages to it dropped", "kiosk", cl.ID, "unacknowledged", cl.State.Inflight.Len())
		}
		return false
	}
	return true
}

// spend takes n of kiosk id's message budget, all or none.
func (h *authHook) spend(id string, n int) bool {
	if h.cfg.KioskRate <= 0 {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.limitsLocked(id).msgs.AllowN(h.now(), n)
}

// OnSubscribe holds a kiosk's SUBSCRIBE to its message budget, one message
// a filter: mochi sends the retained message again for each filter, even
// one named twice. A SUBSCRIBE over the budget, naming more than
// maxFilters filters or one filter twice is refused whole: each filter
// fails in the SUBACK (0x80; 0x8F in MQTT 5), and nothing is sent.
func (h *authHook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	return h.holdFilters(cl, pk, "subscribe")
}

// OnUnsubscribe holds a kiosk's UNSUBSCRIBE to the same rules as
// OnSubscribe a SUBSCRIBE. A refused one is acknowledged and unsubscribes
// nothing (MQTT 5: 0x11, no subscription, for each filter).
func (h *authHook) OnUnsubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	return h.holdFilters(cl, pk, "unsubscribe")
}

func (h *authHook) holdFilters(cl *mqtt.Client, pk packets.Packet, what string) packets.Packet {
	if cl.Net.Inline || h.isHub(cl.Properties.Username) {
		return pk
	}
	why := ""
	seen := map[string]bool{}
	for _, f := range pk.Filters {
		if len(seen) == maxFilters || seen[f.Filter] {
			why = "filters"
			break
		}
		seen[f.Filter] = true
	}
	if why == "" && !h.spend(string(cl.Properties.Username), len(pk.Filters)) {
		why = "rate"
	}
	if why == "" {
		return pk
	}
	if h.count(why)%100 == 1 {
		h.log.Warn("kiosk "+what+" refused", "kiosk", cl.ID, "reason", why, "filters", len(pk.Filters))
	}
	// An empty filter is invalid: mochi refuses it before it looks
	// anything up, sends nothing retained, and unsubscribes nothing.
	refused := make(packets.Subscriptions, len(pk.Filters))
	for i := range refused {
		refused[i] = packets.Subscription{Qos: pk.Filters[i].Qos}
	}
	pk.Filters = refused
	return pk
}

// OnPacketRead holds a DISCONNECT's session expiry to maxSessionExpiry:
// MQTT 5 lets a client set it again as it leaves, and mochi caps it only
// at CONNACK. (From 0 it may not be raised at all; mochi refuses that.)
func (h *authHook) OnPacketRead(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Disconnect && pk.Properties.SessionExpiryIntervalFlag &&
		pk.Properties.SessionExpiryInterval > maxSessionExpiry {
		pk.Properties.SessionExpiryInterval = maxSessionExpiry
	}
	return pk, nil
}

// OnPublish spends the kiosk's publish budget, and keeps retained messages
// to the kiosk's status topic: nothing else a kiosk says outlives it.
func (h *authHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || h.isHub(cl.Properties.Username) {
		return pk, nil
	}
	if !h.spend(string(cl.Properties.Username), 1) {
		if h.count("rate")%100 == 1 {
			h.log.Warn("kiosk over its message rate; publishes dropped", "kiosk", cl.ID, "rate", h.cfg.KioskRate)
		}
		// Acknowledged and dropped: a QoS 1 publish left unacknowledged
		// would only be sent again.
		pk.FixedHeader.Retain = false
		return pk, packets.CodeSuccessIgnore
	}
	if pk.FixedHeader.Retain && !strings.HasSuffix(pk.TopicName, "/"+protocol.TopicStatus) {
		pk.FixedHeader.Retain = false
	}
	return pk, nil
}

func (h *authHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.mu.Lock()
	delete(h.stamps, cl)
	delete(h.certs, cl)
	h.mu.Unlock()
}

// revoke closes every session whose credential is no longer good: a
// certificate revoked or expired, or a kiosk password replaced.
func (h *authHook) revoke(ctx context.Context) {
	now := time.Now()
	var stale []*mqtt.Client
	h.mu.Lock()
	for cl, cert := range h.certs {
		if h.revoked[fmt.Sprintf("%x", cert.SerialNumber)] || now.After(cert.NotAfter) {
			stale = append(stale, cl)
			delete(h.certs, cl)
		}
	}
	n := len(h.stamps)
	h.mu.Unlock()
	for _, cl := range stale {
		h.count("revoked")
		h.log.Warn("certificate revoked or expired; the session is closed", "client", cl.ID, "remote", cl.Net.Remote)
		h.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
	}
	if n == 0 || h.cfg.Kiosks == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	current, err := h.cfg.Kiosks.Stamps(ctx)
	if err != nil {
		h.log.Error("kiosk credentials not rechecked", "err", err)
		return
	}
	stale = stale[:0]
	h.mu.Lock()
	for cl, stamp := range h.stamps {
		if now, ok := current[string(cl.Properties.Username)]; !ok || now != stamp {
			stale = append(stale, cl)
			delete(h.stamps, cl)
		}
	}
	h.mu.Unlock()
	for _, cl := range stale {
		h.count("revoked")
		h.log.Warn("kiosk credentials replaced; its session is closed", "kiosk", cl.ID, "remote", cl.Net.Remote)
		h.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
	}
}

func (h *authHook) count(why string) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refused == nil {
		h.refused = map[string]int64{}
	}
	h.refused[why]++
	return h.refused[why]
}

func (h *authHook) refusedCount(why string) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.refused[why]
}

func (h *authHook) refusedCounts() map[string]int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.refused)
}

// KioskMay reports whether kiosk id may publish (write) to, or subscribe
// to, topic: only its own topics, named exactly, no wildcards.
func KioskMay(id, topic string, write bool) bool {
	suffix, ok := strings.CutPrefix(topic, protocol.TopicRoot+id+"/")
	if !ok || !protocol.ValidKioskID(id) {
		return false
	}
	if write {
		return slices.Contains(protocol.KioskPublishes, suffix)
	}
	return slices.Contains(protocol.KioskSubscribes, suffix)
}

// kioskWillMay reports whether kiosk id may leave a last will on topic:
// one it may publish on, and retained only on its status.
func kioskWillMay(id, topic string, retain bool) bool {
	if !KioskMay(id, topic, true) {
		return false
	}
	return !retain || topic == protocol.KioskTopic(id, protocol.TopicStatus)
}
