package web

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/frank-postage/frank/hub/web/session"
)

// LimitPerSource wraps ln so that one source (an address, or an IPv6 /64)
// holds at most n open connections; more are closed as they come. The
// server's timeouts bound how long each is held, and this bounds how many,
// so one stranger cannot use up the descriptors the broker and the
// database share. Trusted proxies are not limited: every client behind
// them comes from their address.
func LimitPerSource(ln net.Listener, n int, proxies session.Proxies, log *slog.Logger) net.Listener {
	if n <= 0 {
		return ln
	}
	return &sourceLimit{Listener: ln, n: n, proxies: proxies, open: map[string]int{}, log: log}
}

type sourceLimit struct {
	net.Listener
	n       int
	proxies session.Proxies
	log     *slog.Logger
	refused atomic.Int64

	mu   sync.Mutex
	open map[string]int
}

func (l *sourceLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
		if err != nil || l.proxies.Trusts(ap.Addr().Unmap()) {
			return c, nil
		}
		src := session.Source(ap.Addr().Unmap().String())
		l.mu.Lock()
		over := l.open[src] >= l.n
		if !over {
			l.open[src]++
		}
		l.mu.Unlock()
		if over {
			// Logged once per hundred: a flood must not flood the log too.
			if l.refused.Add(1)%100 == 1 {
				l.log.Warn("http connection refused: too many from one address", "remote", src, "limit", l.n)
			}
			c.Close()
			continue
		}
		return &sourceConn{Conn: c, release: func() { l.release(src) }}, nil
	}
}

func (l *sourceLimit) release(src string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[src]--; l.open[src] <= 0 {
		delete(l.open, src)
	}
}

type sourceConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *sourceConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
