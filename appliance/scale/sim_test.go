package scale_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/scale"
	"github.com/frank-postage/frank/testbench/scalesim"
)

// ptyPort is the pty opened as a kiosk opens a serial device. A read that
// times out returns 0, nil, as go.bug.st/serial does.
type ptyPort struct {
	*os.File
	timeout time.Duration
}

func (p *ptyPort) SetReadTimeout(d time.Duration) error { p.timeout = d; return nil }

func (p *ptyPort) Read(b []byte) (int, error) {
	if err := p.SetReadDeadline(time.Now().Add(p.timeout)); err != nil {
		return 0, err
	}
	n, err := p.File.Read(b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return n, nil
	}
	return n, err
}

type device interface {
	scale.Reader
	Zero(context.Context) error
}

func startSim(t *testing.T, proto scalesim.Protocol) (*scalesim.Scale, device) {
	t.Helper()
	sim, port := openSim(t, proto)
	if proto == scalesim.NCI {
		return sim, scale.NewNCI(port, 200*time.Millisecond)
	}
	return sim, scale.NewSICS(port, 200*time.Millisecond)
}

func openSim(t *testing.T, proto scalesim.Protocol) (*scalesim.Scale, *ptyPort) {
	t.Helper()
	sim, err := scalesim.Start(filepath.Join(t.TempDir(), "scale"), proto, nil)
	if errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("the scale simulator needs Linux pseudo-terminals: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	f, err := os.OpenFile(sim.Path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return sim, &ptyPort{File: f, timeout: time.Second}
}

func TestSimulator(t *testing.T) {
	for _, proto := range []struct {
		name string
		p    scalesim.Protocol
	}{{"nci", scalesim.NCI}, {"sics", scalesim.SICS}} {
		t.Run(proto.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			sim, d := startSim(t, proto.p)
			sim.SetSettle(300 * time.Millisecond)

			t.Run("stable", func(t *testing.T) {
				sim.SetWeight(566990) // 1.25 lb, 566.99 g
				r, err := d.Read(ctx)
				if err != nil || !r.Stable || r.WeightMg != 566990 {
					t.Fatalf("Read = %+v, %v; want 566990 mg stable", r, err)
				}
			})
			t.Run("motion then stable", func(t *testing.T) {
				sim.SetWeight(1000000)
				sim.SetMotion(true)
				r, err := d.Read(ctx)
				if err != nil || r.Stable {
					t.Fatalf("Read in motion = %+v, %v; want unstable", r, err)
				}
				start := time.Now()
				r, err = scale.WaitStable(ctx, d, 3, 20*time.Millisecond)
				if err != nil || r.WeightMg != 1000000 && proto.p == scalesim.SICS {
					t.Fatalf("WaitStable = %+v, %v", r, err)
				}
				if proto.p == scalesim.NCI && r.WeightMg != 997903 { // 2.20 lb
					t.Fatalf("WaitStable = %+v; want 2.20 lb", r)
				}
				if time.Since(start) < 200*time.Millisecond {
					t.Errorf("WaitStable returned after %v, before the platter settled", time.Since(start))
				}
			})
			t.Run("wait stable gives up", func(t *testing.T) {
				sim.SetMotion(true)
				defer sim.SetMotion(false)
				short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
				defer cancel()
				_, err := scale.WaitStable(short, d, 3, 20*time.Millisecond)
				if !errors.Is(err, scale.ErrMotion) || !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("err = %v; want motion and deadline", err)
				}
			})
			t.Run("zero", func(t *testing.T) {
				sim.SetWeight(300000)
				if err := d.Zero(ctx); err != nil {
					t.Fatal(err)
				}
				r, err := d.Read(ctx)
				if err != nil || !r.AtZero || r.WeightMg != 0 {
					t.Fatalf("after zero: %+v, %v", r, err)
				}
				sim.SetWeight(300000 + 453592) // +1 lb (453.59 g in SICS)
				r, err = d.Read(ctx)
				want := int64(453590)
				if proto.p == scalesim.NCI {
					want = 453592
				}
				if err != nil || r.WeightMg != want {
					t.Fatalf("after zero, +1 lb: %+v, %v; want %d", r, err, want)
				}
				sim.SetWeight(300000)
			})
			t.Run("zero in motion", func(t *testing.T) {
				sim.SetMotion(true)
				defer sim.SetMotion(false)
				if err := d.Zero(ctx); !errors.Is(err, scale.ErrMotion) {
					t.Fatalf("err = %v; want ErrMotion", err)
				}
			})
			faults := []struct {
				name  string
				fault scalesim.Fault
				want  error
			}{
				{"over", scalesim.OverCapacity, scale.ErrOverCapacity},
				{"under", scalesim.UnderCapacity, scale.ErrUnderCapacity},
				{"silent", scalesim.Silent, scale.ErrSilent},
				{"garbled", scalesim.Garbled, scale.ErrProtocol},
			}
			for _, f := range faults {
				t.Run(f.name, func(t *testing.T) {
					sim.SetFault(f.fault)
					defer sim.SetFault(scalesim.OK)
					r, err := d.Read(ctx)
					if !errors.Is(err, f.want) {
						t.Fatalf("Read = %+v, %v; want %v", r, err, f.want)
					}
					if r.OverCapacity != (f.fault == scalesim.OverCapacity) || r.UnderCapacity != (f.fault == scalesim.UnderCapacity) {
						t.Errorf("flags = %+v", r)
					}
					if _, err := scale.WaitStable(ctx, d, 3, 10*time.Millisecond); !errors.Is(err, f.want) {
						t.Errorf("WaitStable err = %v; want %v", err, f.want)
					}
					if err := d.Zero(ctx); !errors.Is(err, f.want) {
						t.Errorf("Zero err = %v; want %v", err, f.want)
					}
				})
			}
		})
	}
}

func TestSimulatorUnits(t *testing.T) {
	sim, d := startSim(t, scalesim.NCI)
	sim.SetWeight(1234567)
	for _, tt := range []struct {
		unit scalesim.Unit
		want int64
	}{
		{scalesim.LB, 1233771}, // 2.72 lb
		{scalesim.OZ, 1233204}, // 43.5 oz
		{scalesim.KG, 1235000}, // 1.235 kg
		{scalesim.G, 1235000},  // 1235 g
	} {
		sim.SetUnit(tt.unit)
		r, err := d.Read(context.Background())
		if err != nil || r.WeightMg != tt.want {
			t.Errorf("%s: %+v, %v; want %d", tt.unit, r, err, tt.want)
		}
	}
}
