package broker

import (
	"context"
	"crypto/subtle"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/time/rate"

	"github.com/frank-postage/frank/protocol"
)

// authHook authenticates clients and confines kiosks to their topics.
type authHook struct {
	mqtt.HookBase
	cfg Config
	log *slog.Logger
	srv *mqtt.Server

	mu       sync.Mutex
	stamps   map[*mqtt.Client]string        // a connected kiosk's credential stamp
	rates    map[*mqtt.Client]*rate.Limiter // a connected kiosk's publish budget
	failures map[string]*rate.Limiter       // failed logins by address
	refused  map[string]int64               // by reason
}

func (h *authHook) ID() string { return "frank-auth" }

func (h *authHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnDisconnect:
		return true
	}
	return false
}

func (h *authHook) isHub(user []byte) bool {
	return h.cfg.HubUser != "" && string(user) == h.cfg.HubUser
}

// OnConnect runs before authentication. It refuses, as not authorized, a
// kiosk whose last will names a topic the kiosk may not publish on (a will
// is published by the broker on the client's behalf, after the ACL would
// have looked), and makes a kiosk's client id its user name, as mosquitto's
// use_username_as_clientid does: another kiosk's id cannot be taken, and
// older firmware that sent "frank-kiosk-ID" keeps working.
func (h *authHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	user := pk.Connect.Username
	if h.isHub(user) {
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
	if len(user) > 0 {
		cl.ID = string(user)
	}
	return nil
}

func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	user, pass := string(pk.Connect.Username), pk.Connect.Password
	if h.isHub(pk.Connect.Username) {
		ok := subtle.ConstantTimeCompare(pass, []byte(h.cfg.HubPassword)) == 1
		if !ok {
			h.refuse(cl, user, "bad_password")
		}
		return ok
	}
	if !protocol.ValidKioskID(user) || h.cfg.Kiosks == nil {
		h.refuse(cl, user, "unknown_user")
		return false
	}
	ip := remoteHost(cl.Net.Remote)
	slow := h.mayTry(ip)
	stamp, ok := h.cfg.Kiosks.Authenticate(user, string(pass), slow)
	if !ok {
		if !slow {
			h.refuse(cl, user, "auth_rate")
			return false
		}
		h.failed(ip)
		h.refuse(cl, user, "bad_password")
		return false
	}
	h.mu.Lock()
	h.stamps[cl] = stamp
	if h.cfg.KioskRate > 0 {
		h.rates[cl] = rate.NewLimiter(rate.Limit(h.cfg.KioskRate), h.cfg.KioskBurst)
	}
	h.mu.Unlock()
	return true
}

func (h *authHook) refuse(cl *mqtt.Client, user, why string) {
	// Logged once per fifty: a stranger's spray must not fill the disk.
	if h.count(why)%50 == 1 {
		h.log.Warn("broker refused a client", "user", user, "remote", cl.Net.Remote, "reason", why)
	}
}

// mayTry reports whether ip still has failed logins to spend.
func (h *authHook) mayTry(ip string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.failures[ip]
	return l == nil || l.Tokens() >= 1
}

// failed spends one of ip's failed logins.
func (h *authHook) failed(ip string) {
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
	l.Allow()
}

func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if h.isHub(cl.Properties.Username) {
		return true
	}
	ok := KioskMay(string(cl.Properties.Username), topic, write)
	if !ok {
		h.count("acl")
	}
	return ok
}

// OnPublish spends the kiosk's publish budget, and keeps retained messages
// to the kiosk's status topic: nothing else a kiosk says outlives it.
func (h *authHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || h.isHub(cl.Properties.Username) {
		return pk, nil
	}
	h.mu.Lock()
	l := h.rates[cl]
	h.mu.Unlock()
	if l != nil && !l.Allow() {
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
	delete(h.rates, cl)
	h.mu.Unlock()
}

// revoke closes every kiosk session whose credential is no longer the
// kiosk's current one.
func (h *authHook) revoke(ctx context.Context) {
	h.mu.Lock()
	n := len(h.stamps)
	h.mu.Unlock()
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
	var stale []*mqtt.Client
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
