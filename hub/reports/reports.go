// Package reports sends the postal authority each period's report by
// itself: one hub of those sharing a database at a time (a job lease), as
// soon as a period has ended, again with backoff when the authority cannot
// be reached or refuses it, and with an alert when a report is refused or
// late.
package reports

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/postal"
)

// Config is the schedule. Zero values take the documented defaults.
type Config struct {
	// Every is the reporting period, aligned to UTC (24 h: each day from
	// midnight); default 24 h.
	Every time.Duration
	// Grace is how long after a period ends its report waits for sales
	// still being committed; default 1 minute.
	Grace time.Duration
	// LateAfter raises report_late for a period not accepted this long
	// after it ended; default 6 hours.
	LateAfter time.Duration
	// Holder names this hub in the job lease.
	Holder string
	// Now is the clock; default time.Now.
	Now func() time.Time
}

func (c *Config) defaults() {
	if c.Every <= 0 {
		c.Every = 24 * time.Hour
	}
	if c.Grace == 0 {
		c.Grace = time.Minute
	}
	if c.LateAfter == 0 {
		c.LateAfter = 6 * time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// reportLedger is the ledger: it builds and files reports.
type reportLedger interface {
	ReportedUntil(ctx context.Context) (time.Time, error)
	PendingPeriod(ctx context.Context, from time.Time) (pfrom, to time.Time, ok bool, err error)
	BuildReport(ctx context.Context, from, to time.Time) (*postal.Report, error)
	SubmitReport(ctx context.Context, r *postal.Report, pa ledger.Submitter) (string, error)
}

// leaser hands the job to one hub at a time; the store.
type leaser interface {
	TryLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error)
}

type alerter interface {
	Raise(ctx context.Context, kind, subject, message string)
	Clear(ctx context.Context, kind, subject, why string)
}

// Lease is the job lease's name; a hub holds it for three ticks.
const Lease = "postal-reports"

// Reporter files the reports.
type Reporter struct {
	cfg   Config
	book  reportLedger
	pa    ledger.Submitter
	lease leaser
	al    alerter
	log   *slog.Logger

	failures int       // in a row, for the backoff
	retryAt  time.Time // no attempt before
}

// New returns a reporter; Run or Tick make it work.
func New(cfg Config, b reportLedger, pa ledger.Submitter, l leaser, al alerter, log *slog.Logger) *Reporter {
	cfg.defaults()
	return &Reporter{cfg: cfg, book: b, pa: pa, lease: l, al: al, log: log}
}

// Run ticks every period until ctx ends.
func (r *Reporter) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := r.Tick(ctx, 3*every); err != nil && ctx.Err() == nil {
			r.log.Warn("postal report not sent yet", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Tick sends every ended period's report in order, if this hub holds (or
// takes) the lease for ttl; it stops at the first failure and waits out
// its backoff.
func (r *Reporter) Tick(ctx context.Context, ttl time.Duration) error {
	now := r.cfg.Now()
	mine, err := r.lease.TryLease(ctx, Lease, r.cfg.Holder, now, ttl)
	if err != nil || !mine {
		return err
	}
	if now.Before(r.retryAt) {
		return nil
	}
	from, err := r.book.ReportedUntil(ctx)
	if err != nil {
		return err
	}
	for {
		to := from.Truncate(r.cfg.Every).Add(r.cfg.Every)
		// A report from here sent before whose answer never came (one sent
		// by hand may span other periods) goes again as it was: any other
		// period would overlap it, and be refused.
		if pfrom, pto, ok, err := r.book.PendingPeriod(ctx, from); err != nil {
			return err
		} else if ok {
			from, to = pfrom, pto
		}
		if now.Before(to.Add(r.cfg.Grace)) {
			return nil
		}
		if err := r.send(ctx, now, from, to); err != nil {
			return err
		}
		from = to
	}
}

// send builds and files one period's report.
func (r *Reporter) send(ctx context.Context, now, from, to time.Time) error {
	subject := "report/" + from.Format(time.RFC3339)
	rep, err := r.book.BuildReport(ctx, from, to)
	var ref string
	if err == nil {
		ref, err = r.book.SubmitReport(ctx, rep, r.pa)
	}
	if err != nil {
		r.failures++
		backoff := min(time.Minute<<min(r.failures-1, 6), time.Hour)
		r.retryAt = now.Add(backoff)
		var refused *postal.RefusedError
		if errors.As(err, &refused) {
			r.al.Raise(ctx, alerts.ReportRefused, subject, fmt.Sprintf("the postal authority refused the report for %s to %s: %v", from.Format(time.RFC3339), to.Format(time.RFC3339), err))
		}
		if now.After(to.Add(r.cfg.LateAfter)) {
			r.al.Raise(ctx, alerts.ReportLate, subject, fmt.Sprintf("the report for %s to %s is %s late: %v", from.Format(time.RFC3339), to.Format(time.RFC3339), now.Sub(to).Round(time.Minute), err))
		}
		return fmt.Errorf("reports: %s to %s (try %d, next in %s): %w", from.Format(time.RFC3339), to.Format(time.RFC3339), r.failures, backoff, err)
	}
	r.failures, r.retryAt = 0, time.Time{}
	r.al.Clear(ctx, alerts.ReportRefused, subject, "accepted as "+ref)
	r.al.Clear(ctx, alerts.ReportLate, subject, "accepted as "+ref)
	r.log.Info("scheduled postal report accepted", "ref", ref, "from", from, "to", to, "indicia", rep.Totals.Indicia)
	return nil
}
