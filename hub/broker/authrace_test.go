package broker

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/frank-postage/frank/testbench/wait"
)

// gatedFleet holds every slow check until the gate opens, as a bcrypt
// takes its time, and refuses every password.
type gatedFleet struct {
	gate chan struct{}
	slow atomic.Int32
}

func (f *gatedFleet) Authenticate(_, _ string, slow bool) (string, bool) {
	if slow {
		f.slow.Add(1)
		<-f.gate
	}
	return "", false
}

func (f *gatedFleet) Stamps(context.Context) (map[string]string, error) { return nil, nil }

// An address's budget of slow checks is spent before each check, not after
// it failed: the connections one address holds at once (64) all found a
// failure left together, and each paid for bcrypt, every time one came
// back.
func TestAuthFailuresReservedBeforeTheCheck(t *testing.T) {
	f := &gatedFleet{gate: make(chan struct{})}
	b := start(t, func(c *Config) { c.Kiosks, c.AuthFailures = f, 5 })
	pipe, _ := net.Pipe()
	defer pipe.Close()
	var wg sync.WaitGroup
	var done atomic.Int32
	for range 20 {
		wg.Go(func() {
			cl := b.srv.NewClient(addrConn{Conn: pipe, addr: &net.TCPAddr{IP: net.ParseIP("198.51.100.7"), Port: 40000}}, "tcp", "", false)
			if b.hook.OnConnectAuthenticate(cl, connectAs("k1", "wrong", "k1", nil)) {
				t.Error("a wrong password let in")
			}
			done.Add(1)
		})
	}
	// Every try has either begun its slow check or been refused.
	wait.For(t, 10*time.Second, "20 tries at once to be checked or refused", func() bool { return f.slow.Load()+done.Load() == 20 })
	n := f.slow.Load()
	close(f.gate)
	wg.Wait()
	if n != 5 {
		t.Fatalf("20 wrong passwords at once from one address: %d slow checks, want 5", n)
	}
}
