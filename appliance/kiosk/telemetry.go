package kiosk

import (
	"time"

	"github.com/frank-postage/frank/protocol"
)

// heartbeat publishes telemetry every period the hub configured (30 s
// until it says), picking up a new period without a restart.
func (k *Kiosk) heartbeat() {
	for {
		period := 30 * time.Second
		k.mu.Lock()
		if k.config != nil && k.config.HeartbeatS > 0 {
			period = time.Duration(k.config.HeartbeatS) * time.Second
		}
		k.mu.Unlock()
		select {
		case <-k.stop:
			return
		case <-k.newCfg:
			continue
		case <-time.After(period):
		}
		if k.link.Up() {
			k.publishJSON(protocol.TopicTelemetry, k.Telemetry())
		}
	}
}

// Telemetry is the kiosk's state as its heartbeat reports it.
func (k *Kiosk) Telemetry() protocol.Telemetry {
	t := k.telemetry()
	st := k.Status()
	t.InService = st.InService
	if !st.InService {
		t.Reasons = st.Reasons
	}
	t.Scale = k.Weight().State
	return t
}

func (k *Kiosk) telemetry() protocol.Telemetry {
	left := k.LabelsLeft()
	k.mu.Lock()
	t := protocol.Telemetry{KioskID: k.cfg.ID, At: k.now().UTC(), Firmware: k.cfg.Firmware,
		UptimeS: int64(time.Since(k.started).Seconds()), LabelsLeft: left, LabelsUnknown: k.stockUnknown.Load(), Paper: "ok", Printer: "ok", Scale: "ok",
		LastError: k.lastErr, Sales: k.sales, InService: true}
	k.mu.Unlock()
	k.ds.mu.Lock()
	if k.ds.printer != "" { // the printer answers status queries
		t.Printer, t.Paper = k.ds.printer, k.ds.paper
	}
	k.ds.mu.Unlock()
	return t
}

// now is the kiosk's clock: the system's, unless the config gives one.
func (k *Kiosk) now() time.Time {
	if k.cfg.Clock != nil {
		return k.cfg.Clock()
	}
	return time.Now()
}

// uptime is how long the kiosk has run, on the monotonic clock: a step of
// the wall clock does not move it.
func (k *Kiosk) uptime() time.Duration {
	if k.cfg.monotonic != nil {
		return k.cfg.monotonic()
	}
	return time.Since(k.started)
}
