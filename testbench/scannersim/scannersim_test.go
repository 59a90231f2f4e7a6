package scannersim_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/scanner"
	"github.com/frank-postage/frank/appliance/serialport"
	"github.com/frank-postage/frank/testbench/scannersim"
)

func TestScannerOverPTY(t *testing.T) {
	sim, err := scannersim.Start(filepath.Join(t.TempDir(), "dev", "scanner"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	port, err := serialport.Open(serialport.Config{Path: sim.Path(), Baud: 9600})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	scans := scanner.New(port).Scans(ctx)
	defer func() {
		cancel()
		port.Close() // releases the blocked read
		for range scans {
		}
	}()

	next := func() scanner.Scan {
		t.Helper()
		select {
		case sc, ok := <-scans:
			if !ok {
				t.Fatal("scans closed")
			}
			return sc
		case <-time.After(5 * time.Second):
			t.Fatal("no scan")
		}
		return scanner.Scan{}
	}
	steps := []struct {
		name string
		send func() error
		code string
		kind scanner.Kind
		err  error
	}{
		{"cr", func() error { return sim.Scan("1966-f8cf") }, "1966-F8CF", scanner.LabelSerial, nil},
		{"lf", func() error { return sim.ScanEnding("STAFF-0042", scannersim.LF) }, "STAFF-0042", scanner.StaffBadge, nil},
		{"crlf", func() error { return sim.ScanEnding("1966-F8CE", scannersim.CRLF) }, "1966-F8CE", scanner.LabelSerial, nil},
		{"noise", sim.Garble, "", 0, scanner.ErrGarbled},
		{"overlong", sim.Overlong, "", 0, scanner.ErrTooLong},
		// After each fault the next scan must come through intact.
		{"after faults", func() error { return sim.ScanEnding("9400111", scannersim.CRLF) }, "9400111", scanner.Unknown, nil},
	}
	for _, st := range steps {
		if err := st.send(); err != nil {
			t.Fatal(err)
		}
		sc := next()
		if st.err != nil {
			if !errors.Is(sc.Err, st.err) {
				t.Errorf("%s: got %+v, want %v", st.name, sc, st.err)
			}
			continue
		}
		kind, code := scanner.Classify(sc.Code)
		if sc.Err != nil || code != st.code || kind != st.kind {
			t.Errorf("%s: got %+v (%v %q), want %v %q", st.name, sc, kind, code, st.kind, st.code)
		}
	}
}
