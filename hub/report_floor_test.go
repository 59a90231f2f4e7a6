package hub_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/ledger"
	hubpostal "github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/protocol"
)

// A sale committed by a hub whose clock is behind, after the report of the
// period its clock names was built, goes in the next report: the rows a
// report takes by time are dated no earlier than the end of the last period
// built. Before, it was in no report, and the MPSD's ascending register
// jumped between two reports the authority accepted.
func TestLateSaleGoesInTheNextReport(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	_, r1, to1 := soldAndReported(t, e, k)
	e.clock.Set(to1.Add(-30 * time.Second)) // behind: inside the period reported
	res := decode(t, k.ask(purchase("b-1", "kiosk-1", "1966-F8CF-02", nil)))
	if res.Status != protocol.ResultOK {
		t.Fatal(res.Error)
	}
	if err := e.h.Ledger().RecordPrint(ctx, &protocol.PrintReport{RequestID: "a-1", KioskID: "kiosk-1", // and voids a stamp of it
		Labels: []protocol.LabelOutcome{{LabelSerial: "1966-F8CF-01", Outcome: protocol.PrintFailed, Reason: "jam"}}}); err != nil {
		t.Fatal(err)
	}
	late, err := protocol.ParseIndicium(res.Indicia[0].Matrix)
	if err != nil {
		t.Fatal(err)
	}
	r2 := reportThrough(t, e, to1, to1.Add(time.Hour))
	sold, claimed := 0, 0
	for _, r := range []*hubpostal.Report{r1, r2} {
		for _, x := range r.Transactions {
			if x.MPSD == late.MPSDSerial && x.AR == int64(late.AR) {
				sold++
			}
		}
		claimed += len(r.Voided)
	}
	if sold != 1 || claimed != 1 {
		t.Errorf("the late stamp is in %d reports and the late void in %d; want 1 each", sold, claimed)
	}
	for _, a := range r1.Registers {
		for _, b := range r2.Registers {
			if a.Serial == b.Serial && (a.AR != b.ARStart || a.DR != b.DRStart) {
				t.Errorf("psd %d ends report 1 at AR %d DR %d and starts report 2 at AR %d DR %d", a.Serial, a.AR, a.DR, b.ARStart, b.DRStart)
			}
		}
	}
}

// A report must start where the last accepted one ended and overlap no
// period sent: a gap is in no report, an overlap in two. A period that has
// not ended is not reported.
func TestReportPeriodsFollowOn(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	l := e.h.Ledger()
	from, err := l.ReportedUntil(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t1, t2 := from.Add(time.Hour), from.Add(2*time.Hour)
	if _, err := l.BuildReport(ctx, from, t1); err == nil {
		t.Fatal("a report for a period that has not ended was built")
	}
	e.clock.Set(t2.Add(time.Hour))
	file := func(from, to time.Time) error {
		t.Helper()
		r, err := l.BuildReport(ctx, from, to)
		if err != nil {
			t.Fatal(err)
		}
		_, err = l.SubmitReport(ctx, r, e.h.Postal())
		return err
	}
	if err := file(t1, t2); !errors.Is(err, ledger.ErrReportPeriod) {
		t.Fatalf("a report leaving a gap: %v", err)
	}
	if err := file(from, t1); err != nil {
		t.Fatal(err)
	}
	if err := file(from.Add(30*time.Minute), t2); !errors.Is(err, ledger.ErrReportPeriod) {
		t.Fatalf("a report overlapping one accepted: %v", err)
	}
	if err := file(from, t1); err != nil { // the same period again: resent as first sent
		t.Fatal(err)
	}
	if err := file(t1, t2); err != nil {
		t.Fatal(err)
	}
}

// The events a report takes by their time are dated from the floor too: a
// compromise declared by a hub whose clock is behind, after the period its
// clock names was reported, is in the next report.
func TestLateCompromiseGoesInTheNextReport(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	in, r1, to1 := soldAndReported(t, e, k)
	e.clock.Set(to1.Add(-30 * time.Second)) // behind
	if err := e.h.Keys().Compromise(ctx, in.CertSerial, to1.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	r2 := reportThrough(t, e, to1, to1.Add(time.Hour))
	n := 0
	for _, r := range []*hubpostal.Report{r1, r2} {
		for _, ev := range r.Events {
			if ev.Kind == hubpostal.EventKeyCompromised {
				n++
			}
		}
	}
	if n != 1 {
		t.Errorf("the key's compromise is in %d reports, want 1", n)
	}
}

// soldAndReported sells a stamp on k (kiosk-1) and reports the period from
// the last report through the next whole hour, the clock 2 minutes past
// it. It returns the stamp, the report and the period's end.
func soldAndReported(t *testing.T, e *env, k *kioskClient) (*protocol.Indicium, *hubpostal.Report, time.Time) {
	t.Helper()
	from, err := e.h.Ledger().ReportedUntil(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	res := decode(t, k.ask(purchase("a-1", "kiosk-1", "1966-F8CF-01", nil)))
	if res.Status != protocol.ResultOK {
		t.Fatal(res.Error)
	}
	in, err := protocol.ParseIndicium(res.Indicia[0].Matrix)
	if err != nil {
		t.Fatal(err)
	}
	to := e.clock.Now().Add(time.Hour).Truncate(time.Hour)
	return in, reportThrough(t, e, from, to), to
}

// reportThrough builds the report of [from, to), the clock 2 minutes past
// to, and submits it.
func reportThrough(t *testing.T, e *env, from, to time.Time) *hubpostal.Report {
	t.Helper()
	ctx := context.Background()
	e.clock.Set(to.Add(2 * time.Minute))
	r, err := e.h.Ledger().BuildReport(ctx, from, to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.h.Ledger().SubmitReport(ctx, r, e.h.Postal()); err != nil {
		t.Fatal(err)
	}
	return r
}
