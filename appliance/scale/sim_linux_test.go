package scale_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/scale"
	"github.com/frank-postage/frank/testbench/scalesim"
	"github.com/frank-postage/frank/testbench/wait"
	"golang.org/x/sys/unix"
)

// ResetInputBuffer drops unread input as go.bug.st/serial does, so a reply
// that came after its command timed out is not read as the next one's.
// It goes through SyscallConn: Fd would make the file blocking and end
// its read deadlines. Linux only, as is the simulator's pty.
func (p *ptyPort) ResetInputBuffer() error {
	c, err := p.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := c.Control(func(fd uintptr) {
		ierr = unix.IoctlSetInt(int(fd), unix.TCFLSH, unix.TCIFLUSH)
	}); err != nil {
		return err
	}
	return ierr
}

// queued is how many bytes wait to be read.
func (p *ptyPort) queued() (int, error) {
	c, err := p.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var ierr error
	if err := c.Control(func(fd uintptr) {
		n, ierr = unix.IoctlGetInt(int(fd), unix.TIOCINQ)
	}); err != nil {
		return 0, err
	}
	return n, ierr
}

func TestSimulatorStaleReply(t *testing.T) {
	sim, port := openSim(t, scalesim.SICS)
	d := scale.NewSICS(port, 200*time.Millisecond)
	sim.SetWeight(100000)
	// A reply nobody read, as when the read for it timed out.
	if _, err := port.Write([]byte("SI\r\n")); err != nil {
		t.Fatal(err)
	}
	const stale = "S S     100.00 g\r\n"
	wait.Until(t, 5*time.Second, "the whole reply to be queued", func() error {
		n, err := port.queued()
		if err == nil && n < len(stale) {
			err = fmt.Errorf("%d bytes of it", n)
		}
		return err
	})
	sim.SetWeight(200000)
	if r, err := d.Read(context.Background()); err != nil || r.WeightMg != 200000 {
		t.Fatalf("Read = %+v, %v; want 200000 mg, not the stale reply", r, err)
	}
}
