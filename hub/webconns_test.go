package hub_test

import (
	"bufio"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
)

// The hub's web server closes a kept-alive connection that has gone quiet,
// and holds at most HTTPConnsPerIP from one address: a stranger cannot
// keep connections open until the process runs out of descriptors.
func TestWebConnectionsBounded(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.HTTPIdleTimeout, c.HTTPConnsPerIP = time.Second, 4 })
	get := func(c net.Conn) error {
		if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	idle, err := net.Dial("tcp", e.h.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if err := get(idle); err != nil {
		t.Fatal(err)
	}
	// Quiet past the idle timeout: the hub closes it.
	idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := idle.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("an idle connection still open after 10 s: read %d, %v", n, err)
	}
	for range 4 {
		c, err := net.Dial("tcp", e.h.HTTPAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := get(c); err != nil {
			t.Fatal(err)
		}
	}
	extra, err := net.Dial("tcp", e.h.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if err := get(extra); err == nil {
		t.Fatal("a fifth connection from one address was served")
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
