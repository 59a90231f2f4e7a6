package hub_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pgProxy sits between a hub and PostgreSQL on a Unix socket. Once armed,
// it passes the COMMIT of the next transaction that wrote a statement
// containing match to the server, waits for the server's answer, and
// drops the connection instead of passing it on: the commit happened, and
// the hub hears only that its connection went.
type pgProxy struct {
	match []byte
	armed atomic.Bool
	fired atomic.Int32
}

// startPGProxy returns dsn through a new proxy, and the proxy.
func startPGProxy(t *testing.T, dsn, match string) (string, *pgProxy) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	target := filepath.Join(q.Get("host"), ".s.PGSQL.5432")
	dir := t.TempDir()
	ln, err := net.Listen("unix", filepath.Join(dir, ".s.PGSQL.5432"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := &pgProxy{match: []byte(match)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("unix", target)
			if err != nil {
				c.Close()
				continue
			}
			go p.serve(c, s)
		}
	}()
	q.Set("host", dir)
	u.RawQuery = q.Encode()
	return u.String(), p
}

// serve passes the protocol's messages on, watching the frontend's for
// the statements of each transaction (simple and extended queries).
func (p *pgProxy) serve(c, s net.Conn) {
	var once sync.Once
	closeBoth := func() { once.Do(func() { c.Close(); s.Close() }) }
	defer closeBoth()
	var muted atomic.Bool
	answered := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := s.Read(buf)
			if n > 0 && muted.Load() {
				select {
				case answered <- struct{}{}:
				default:
				}
			} else if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		closeBoth()
	}()
	var n [4]byte // the startup message has no type byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return
	}
	rest := make([]byte, binary.BigEndian.Uint32(n[:])-4)
	if _, err := io.ReadFull(c, rest); err != nil {
		return
	}
	s.Write(append(n[:], rest...))
	stmts := map[string][]byte{}
	wrote, drop := false, false
	for {
		var h [5]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			return
		}
		body := make([]byte, binary.BigEndian.Uint32(h[1:])-4)
		if _, err := io.ReadFull(c, body); err != nil {
			return
		}
		var q []byte // the statement this message runs, if it runs one
		switch h[0] {
		case 'P': // Parse: name, query
			parts := bytes.SplitN(body, []byte{0}, 3)
			stmts[string(parts[0])] = parts[1]
			wrote = wrote || bytes.Contains(parts[1], p.match)
		case 'B': // Bind: portal, statement
			parts := bytes.SplitN(body, []byte{0}, 3)
			q = stmts[string(parts[1])]
		case 'Q':
			q = body
		}
		if q != nil {
			wrote = wrote || bytes.Contains(q, p.match)
			lower := bytes.ToLower(bytes.TrimSpace(q))
			switch {
			case bytes.HasPrefix(lower, []byte("commit")) && wrote && p.armed.CompareAndSwap(true, false):
				drop = true
			case bytes.HasPrefix(lower, []byte("commit")) || bytes.HasPrefix(lower, []byte("rollback")) || bytes.HasPrefix(lower, []byte("begin")):
				wrote = false
			}
		}
		// A simple COMMIT runs at once; a pipelined one (Bind, Execute)
		// at the Sync that ends its pipeline.
		if drop && (h[0] == 'Q' || h[0] == 'S') {
			muted.Store(true)
			s.Write(append(h[:], body...))
			select { // the server has committed and answered
			case <-answered:
			case <-time.After(10 * time.Second):
			}
			p.fired.Add(1)
			return
		}
		if _, err := s.Write(append(h[:], body...)); err != nil {
			return
		}
	}
}
