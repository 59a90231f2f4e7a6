package paytermsim_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/payterm"
	"github.com/frank-postage/frank/appliance/serialport"
	"github.com/frank-postage/frank/testbench/paytermsim"
)

func TestChargeOverPTY(t *testing.T) {
	sim, err := paytermsim.Start(filepath.Join(t.TempDir(), "dev", "payterm"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	port, err := serialport.Open(serialport.Config{Path: sim.Path()})
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	// Generous: a late decline would read as a timeout. The timeout cases wait it out.
	pt := payterm.New(port, payterm.Config{Timeout: 2 * time.Second, CancelWait: time.Second})
	ctx := context.Background()
	want := payterm.Token{Token: "tok_approve", Brand: "visa", Last4: "4242"}

	t.Run("approve", func(t *testing.T) {
		tok, err := pt.Charge(ctx, "s1", 780)
		if err != nil || tok != want {
			t.Fatalf("got %+v, %v", tok, err)
		}
	})
	t.Run("decline", func(t *testing.T) {
		sim.SetNext(paytermsim.Decline)
		_, err := pt.Charge(ctx, "s2", 780)
		var d *payterm.DeclineError
		if !errors.Is(err, payterm.ErrDeclined) || !errors.As(err, &d) || d.Reason != "do_not_honor" {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("timeout sends cancel", func(t *testing.T) {
		sim.SetNext(paytermsim.Timeout)
		_, err := pt.Charge(ctx, "s3", 780)
		if !errors.Is(err, payterm.ErrTimeout) {
			t.Fatalf("got %v", err)
		}
		reqs := sim.Requests()
		last := reqs[len(reqs)-1]
		if last.Op != "cancel" || last.ID != "s3" {
			t.Fatalf("last request %+v, want cancel s3", last)
		}
	})
	t.Run("mode timeout then approve", func(t *testing.T) {
		sim.SetMode(paytermsim.Timeout)
		if _, err := pt.Charge(ctx, "s4", 780); !errors.Is(err, payterm.ErrTimeout) {
			t.Fatalf("got %v", err)
		}
		sim.SetMode(paytermsim.Approve)
		if tok, err := pt.Charge(ctx, "s5", 780); err != nil || tok != want {
			t.Fatalf("got %+v, %v", tok, err)
		}
	})
	t.Run("reply for another id ignored", func(t *testing.T) {
		sim.SetNext(paytermsim.OtherID)
		tok, err := pt.Charge(ctx, "s6", 780)
		if err != nil || tok != want {
			t.Fatalf("got %+v, %v", tok, err)
		}
	})
	t.Run("card number refused", func(t *testing.T) {
		sim.SetNext(paytermsim.LeakPAN)
		tok, err := pt.Charge(ctx, "s7", 780)
		if !errors.Is(err, payterm.ErrProtocol) || tok != (payterm.Token{}) {
			t.Fatalf("got %+v, %v", tok, err)
		}
	})
	t.Run("requests recorded", func(t *testing.T) {
		reqs := sim.Requests()
		sales := 0
		for _, r := range reqs {
			if r.Op == "sale" {
				sales++
				if r.AmountMills != 780 {
					t.Errorf("sale %+v", r)
				}
			}
		}
		if sales != 7 || len(reqs) != 9 {
			t.Errorf("requests %+v", reqs)
		}
	})
}
