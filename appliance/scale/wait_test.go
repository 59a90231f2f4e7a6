package scale_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/scale"
)

// silentPort is a scale that never answers.
type silentPort struct{ timeout time.Duration }

func (p *silentPort) Write(b []byte) (int, error)          { return len(b), nil }
func (p *silentPort) Read([]byte) (int, error)             { time.Sleep(p.timeout); return 0, nil } // pace: a read that times out
func (p *silentPort) SetReadTimeout(d time.Duration) error { p.timeout = d; return nil }

// stuckCtx is a context whose deadline passes but whose timer never
// fires, as on a loaded machine a read can time out at the deadline first.
type stuckCtx struct {
	context.Context
	deadline time.Time
}

func (c stuckCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func TestDeadlineIsNotSilence(t *testing.T) {
	for _, d := range []scale.Reader{scale.NewNCI(&silentPort{}, time.Second), scale.NewSICS(&silentPort{}, time.Second)} {
		ctx := stuckCtx{context.Background(), time.Now().Add(20 * time.Millisecond)}
		if _, err := d.Read(ctx); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, scale.ErrSilent) {
			t.Errorf("%T: Read err = %v; want deadline", d, err)
		}
		ctx.deadline = time.Now().Add(20 * time.Millisecond)
		_, err := scale.WaitStable(ctx, d, 3, time.Millisecond)
		if !errors.Is(err, scale.ErrMotion) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%T: WaitStable err = %v; want motion and deadline", d, err)
		}
	}
}
