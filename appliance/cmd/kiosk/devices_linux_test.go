package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/kiosk"
	"github.com/frank-postage/frank/appliance/serialport"
	"github.com/frank-postage/frank/testbench/scalesim"
	"github.com/frank-postage/frank/testbench/scannersim"
	"github.com/frank-postage/frank/testbench/wait"
)

var errNoScan = errors.New("no scan yet")

// weighs waits until the scale reads mg.
func weighs(t *testing.T, d kiosk.Devices, mg int64, what string) {
	t.Helper()
	wait.Until(t, 10*time.Second, what, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r, err := d.Scale.Read(ctx)
		if err == nil && r.WeightMg != mg {
			err = fmt.Errorf("read %d mg", r.WeightMg)
		}
		return err
	})
}

// scans waits until code, scanned on sim, reaches the kiosk. It scans
// again at each look: a code sent before the kiosk opened the line again
// may be in the pty or not.
func scans(t *testing.T, d kiosk.Devices, sim *scannersim.Scanner, code, what string) {
	t.Helper()
	wait.Until(t, 10*time.Second, what, func() error {
		if err := sim.Scan(code); err != nil {
			return err
		}
		for {
			select {
			case s, ok := <-d.Scans:
				if !ok {
					t.Fatalf("%s: the handheld scanner's scans ended", what)
				}
				if s.Code == code {
					return nil
				}
			default:
				return errNoScan
			}
		}
	})
}

// A scale and a handheld scanner unplugged and plugged back in (their
// ptys closed, and new ones linked at the same paths, as udev links a
// replugged adapter) are read again without restarting the kiosk.
func TestUnpluggedScaleAndScannerComeBack(t *testing.T) {
	dir := t.TempDir()
	scalePath, scanPath := filepath.Join(dir, "frank-scale"), filepath.Join(dir, "frank-scanner")
	plug := func() (*scalesim.Scale, *scannersim.Scanner) {
		sc, err := scalesim.Start(scalePath, scalesim.NCI, nil)
		if err != nil {
			t.Fatal(err)
		}
		sc.SetUnit(scalesim.G)
		sn, err := scannersim.Start(scanPath, nil)
		if err != nil {
			sc.Close()
			t.Fatal(err)
		}
		return sc, sn
	}
	sc, sn := plug()
	ctx, cancel := context.WithCancel(context.Background())
	d, _, closers, err := openDevices(ctx, devicesConfig{Scale: serialport.Config{Path: scalePath}, Scanner: serialport.Config{Path: scanPath}},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		for _, c := range closers {
			c.Close()
		}
		for _, c := range []io.Closer{sc, sn} {
			c.Close()
		}
	}()
	sc.SetWeight(20000)
	weighs(t, d, 20000, "the scale")
	scans(t, d, sn, "STAFF-AAAA", "the scanner")

	sc.Close() // unplugged
	sn.Close()
	wait.For(t, 10*time.Second, "the unplugged scale to read offline", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := d.Scale.Read(ctx)
		return err != nil
	})

	sc, sn = plug() // and back
	sc.SetWeight(30000)
	weighs(t, d, 30000, "the replugged scale")
	scans(t, d, sn, "STAFF-BBBB", "the replugged scanner")
}
