package hub_test

import (
	"context"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/postal"
)

// waitUntil polls cond until it holds, failing the test after 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10 s", what)
		}
	}
}

// The hub files each ended period's report by itself: no command typed.
// A refused report raises report_refused, one still not accepted hours
// after its period raises report_late, and both clear once the authority
// accepts it on a later try.
func TestScheduledReports(t *testing.T) {
	e := newEnvWith(t, func(c *hub.Config) {
		c.Reports.Every, c.ReportTick = time.Hour, 10*time.Millisecond
	})
	ctx := context.Background()
	if res := decode(t, e.kiosk("kiosk-1").ask(purchase("sched-1", "kiosk-1", "1966-F8CF-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("sale: %+v", res.Error)
	}
	start := e.clock.Now()
	if n := len(e.pa.Reports()); n != 0 {
		t.Fatalf("%d reports before the period ended", n)
	}
	// The period ends, and its grace minute passes.
	end := start.Truncate(time.Hour).Add(time.Hour)
	e.clock.Set(end.Add(2 * time.Minute))
	waitUntil(t, "scheduled report", func() bool { return len(e.pa.Reports()) == 1 })
	f := e.pa.Reports()[0]
	if f.Indicia != 1 || !f.To.Equal(end) || f.Licence != postal.DemoLicence {
		t.Fatalf("filed %+v, want 1 indicium up to %s", f, end)
	}

	// The authority now refuses (the licence it holds changed): alerts.
	if err := e.pa.IssueLicence("FR", "PVS-00000-0000"); err != nil {
		t.Fatal(err)
	}
	e.clock.Set(end.Add(time.Hour + 2*time.Minute))
	subject := "report/" + end.UTC().Format(time.RFC3339)
	open := func(kind string) bool {
		as, err := e.h.Alerts().List(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			if a.Kind == kind && a.Subject == subject {
				return true
			}
		}
		return false
	}
	waitUntil(t, "report_refused alert", func() bool { return open(alerts.ReportRefused) })
	if open(alerts.ReportLate) {
		t.Fatal("late two minutes after its period")
	}
	e.clock.Set(end.Add(8 * time.Hour))
	waitUntil(t, "report_late alert", func() bool { return open(alerts.ReportLate) })

	// Fixed: the next try, after its backoff, is accepted and clears both;
	// the periods since are sent in order.
	if err := e.pa.IssueLicence("FR", postal.DemoLicence); err != nil {
		t.Fatal(err)
	}
	e.clock.Set(end.Add(10 * time.Hour))
	waitUntil(t, "the reports since", func() bool { return len(e.pa.Reports()) == 10 })
	waitUntil(t, "alerts cleared", func() bool { return !open(alerts.ReportRefused) && !open(alerts.ReportLate) })
	prev := e.pa.Reports()[0].To
	for _, f := range e.pa.Reports()[1:] {
		if !f.From.Equal(prev) || f.To.Sub(f.From) != time.Hour {
			t.Fatalf("periods not contiguous: %+v after %s", f, prev)
		}
		prev = f.To
	}
	e.check()
}
