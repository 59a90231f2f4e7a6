package hub_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// The PSDM servers are a stored list: ops add one and drain one while the
// hub sells, the hub follows within its check, the added server takes its
// share of the stamps, the drained one finishes and gives its MPSD back,
// and the last server cannot be drained. A server holds 1 to 8 MPSDs.
func TestPSDMServerListAtRunTime(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.Workers, c.MPSDs, c.KeyCheckEvery = 2, 1, 10*time.Millisecond })
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	n := 0
	sell := func(count int) {
		t.Helper()
		for range count {
			n++
			label := fmt.Sprintf("1966-F8CF-%02d", n)
			if n > 10 {
				label = fmt.Sprintf("1966-F8D0-%02d", n-10)
			}
			if res := decode(t, k.ask(purchase(fmt.Sprintf("srv-%d", n), "kiosk-1", label, nil))); res.Status != protocol.ResultOK {
				t.Fatalf("sale %d: %+v", n, res.Error)
			}
		}
	}
	servers := func() []int { return e.h.Pool().Servers() }
	if got := servers(); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("servers at start %v, want [1 2] from --workers 2", got)
	}
	if _, err := e.h.AddPSDMServer(ctx, 9); err == nil {
		t.Fatal("a server with 9 MPSDs was listed")
	}
	id, err := e.h.AddPSDMServer(ctx, 2)
	if err != nil || id != 3 {
		t.Fatalf("add: %d %v", id, err)
	}
	wait.For(t, 10*time.Second, "server 3 running", func() bool { return slices.Contains(servers(), 3) })
	sell(6)
	for _, st := range e.h.Pool().Status() {
		if st.Total != 2 {
			t.Errorf("server %d issued %d of 6 stamps, want 2 (round robin)", st.Worker, st.Total)
		}
		if st.Worker == 3 && st.Load != 2 {
			t.Errorf("server 3 holds %d MPSDs, want 2", st.Load)
		}
		if st.LoadPct < 0 || st.LoadPct > 100 || st.UptimeS < 0 {
			t.Errorf("status %+v", st)
		}
	}
	held := func(id int) []uint32 {
		for _, st := range e.h.Pool().Status() {
			if st.Worker == id {
				return st.MPSDs
			}
		}
		return nil
	}
	mpsd := held(1)
	if err := e.h.DrainPSDMServer(ctx, 1); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "server 1 drained", func() bool { return !slices.Contains(servers(), 1) })
	sell(4)
	for _, st := range e.h.Pool().Status() {
		if slices.Contains(st.MPSDs, mpsd[0]) {
			t.Errorf("the drained server's MPSD %d is still held by server %d", mpsd[0], st.Worker)
		}
	}
	if err := e.h.DrainPSDMServer(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := e.h.DrainPSDMServer(ctx, 3); err == nil {
		t.Fatal("the last server was drained")
	}
	wait.For(t, 10*time.Second, "server 2 drained", func() bool { return slices.Equal(servers(), []int{3}) })
	sell(2)
	e.check()
}
