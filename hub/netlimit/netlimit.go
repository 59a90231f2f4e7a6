// Package netlimit says what a per-address limit counts a client as, and
// bounds the connections a listener takes from one. An IPv4 client is its
// address; an IPv6 client is its /64, since one subscriber is given a whole
// /64 and may use any address in it: counting single addresses would let
// one guesser or flooder start afresh from each.
package netlimit

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Source is what a limit counts for the client address ip (text): the
// address for IPv4, its /64 for IPv6; text that is no address, as is.
func Source(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	return sourceOf(a)
}

// SourceOf is Source for a connection's remote address.
func SourceOf(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		return sourceOf(t.AddrPort().Addr())
	}
	if p, err := netip.ParseAddrPort(a.String()); err == nil {
		return sourceOf(p.Addr())
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

func sourceOf(a netip.Addr) string {
	if a = a.Unmap().WithZone(""); a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// Listen wraps ln so that one source holds at most n open connections;
// more are closed as they come. exempt, if set, names addresses not
// limited (a trusted proxy, behind which every client shares an address).
// n of 0 or less is no limit.
func Listen(ln net.Listener, n int, exempt func(netip.Addr) bool, log *slog.Logger) net.Listener {
	if n <= 0 {
		return ln
	}
	return &listener{Listener: ln, n: n, exempt: exempt, open: map[string]int{}, log: log}
}

type listener struct {
	net.Listener
	n       int
	exempt  func(netip.Addr) bool
	log     *slog.Logger
	refused atomic.Int64

	mu   sync.Mutex
	open map[string]int
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil && l.exempt != nil && l.exempt(ap.Addr().Unmap()) {
			return c, nil
		}
		src := SourceOf(c.RemoteAddr())
		l.mu.Lock()
		over := l.open[src] >= l.n
		if !over {
			l.open[src]++
		}
		l.mu.Unlock()
		if over {
			// Logged once per hundred: a flood must not flood the log too.
			if l.refused.Add(1)%100 == 1 {
				l.log.Warn("connection refused: too many from one address", "remote", src, "limit", l.n)
			}
			c.Close()
			continue
		}
		return &conn{Conn: c, release: func() { l.release(src) }}, nil
	}
}

func (l *listener) release(src string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[src]--; l.open[src] <= 0 {
		delete(l.open, src)
	}
}

type conn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *conn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
