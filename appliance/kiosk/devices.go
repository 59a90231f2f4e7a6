package kiosk

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/frank-postage/frank/appliance/escpos"
	"github.com/frank-postage/frank/appliance/gpio"
	"github.com/frank-postage/frank/appliance/payterm"
	"github.com/frank-postage/frank/appliance/scale"
	"github.com/frank-postage/frank/appliance/scanner"
	"github.com/frank-postage/frank/protocol"
)

// weigher reads the scale; appliance/scale's NCI, SICS and HX711.
type weigher interface {
	Read(ctx context.Context) (scale.Reading, error)
	Zero(ctx context.Context) error
}

// cardTerminal takes a card and hands back a token; appliance/payterm.
type cardTerminal interface {
	Charge(ctx context.Context, id string, amount int64) (payterm.Token, error)
}

// panel is the staff button, status LED and label door; appliance/gpio.
type panel interface {
	Events() <-chan gpio.Event
	DoorOpen() bool
	SetLED(gpio.LEDMode) error
}

// mortal is a device on a line that can fail for good (the port went
// away): payterm.Terminal and scanner.Head close Done then, and nothing
// reopens the port short of restarting the kiosk.
type mortal interface {
	Done() <-chan struct{}
}

// gone reports whether d is a device whose line has failed for good.
func gone(d any) bool {
	m, ok := d.(mortal)
	if !ok {
		return false
	}
	select {
	case <-m.Done():
		return true
	default:
		return false
	}
}

// line is a serial line that is opened again when its device comes back;
// serialport.Line.
type line interface {
	Up() bool
	Changed() <-chan struct{} // closed when the line next goes or comes
}

// Devices are the kiosk's peripherals besides the printer. Any may be nil
// on a kiosk built without it.
type Devices struct {
	Scale    weigher
	Terminal cardTerminal
	Panel    panel
	Scans    <-chan scanner.Scan
	// ScannerLine is the handheld scanner's line, which Scans follows: the
	// kiosk reports the scanner offline while it is gone.
	ScannerLine line
}

// Weight is the scale as the touchscreen shows it.
type Weight struct {
	WeightMg int64  `json:"weight_mg"`
	Stable   bool   `json:"stable"`
	State    string `json:"state"` // ok, motion, over_capacity, under_capacity, offline
}

// printerStatus is a printer that answers real-time status queries;
// appliance/printer.
type printerStatus interface {
	Status() (escpos.Status, error)
}

// deviceState is what the kiosk last learned from its devices.
type deviceState struct {
	mu         sync.Mutex
	weight     Weight
	weighed    chan struct{} // closed and replaced at each new reading
	printer    string        // ok, jam, paper_out, cover_open, printer_error, offline
	paper      string        // ok, near_end, out
	outOfOrder bool          // staff took the kiosk out of service
	wrongStock string        // the label under the head was not the one to print
	ops        opsState      // what ops set remotely
}

// UseDevices attaches the peripherals; call before Connect.
func (k *Kiosk) UseDevices(d Devices) { k.dev = d }

// watchDevices polls the scale and follows the panel and the scanner until
// the kiosk closes.
func (k *Kiosk) watchDevices() {
	k.ds.mu.Lock()
	k.ds.printer, k.ds.paper = "ok", "ok"
	k.ds.mu.Unlock()
	if _, ok := k.printer.(printerStatus); ok {
		go func() {
			for {
				k.refreshPrinter()
				select {
				case <-k.stop:
					return
				case <-time.After(2 * time.Second):
				}
			}
		}()
	}
	if k.dev.Scale != nil {
		go func() {
			for {
				select {
				case <-k.stop:
					return
				case <-time.After(200 * time.Millisecond):
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				r, err := k.dev.Scale.Read(ctx)
				cancel()
				w := weightOf(r, err)
				k.ds.mu.Lock()
				was := k.ds.weight.State
				k.ds.weight = w
				if k.ds.weighed != nil {
					close(k.ds.weighed)
				}
				k.ds.weighed = make(chan struct{})
				k.ds.mu.Unlock()
				if (was == "offline") != (w.State == "offline") {
					// Unplugged or back: the hub hears at once, not at
					// the next heartbeat.
					k.log.Info("scale", "state", w.State, "err", err)
					k.statusChanged()
				}
			}
		}()
	}
	if k.dev.Panel != nil {
		go func() {
			for {
				select {
				case <-k.stop:
					return
				case ev, ok := <-k.dev.Panel.Events():
					if !ok {
						return
					}
					k.log.Info("panel", "event", ev.Kind.String())
					k.statusChanged()
				}
			}
		}()
	}
	if k.dev.Scans != nil {
		go func() {
			for s := range k.dev.Scans {
				k.onScan(s)
			}
		}()
	}
	if k.dev.ScannerLine != nil {
		go k.watchLine(k.dev.ScannerLine, "scanner_offline")
	}
	k.watchGone(k.dev.Terminal, "terminal_offline")
	k.watchGone(k.cfg.LabelCheck, "head_scanner_offline")
}

// watchGone waits for a device's line to fail for good; then the kiosk
// stops selling (Status says reason), tells the hub at once, and hands
// over to cfg.DeviceGone once the sale in hand is over.
func (k *Kiosk) watchGone(d any, reason string) {
	m, ok := d.(mortal)
	if !ok {
		return
	}
	go func() {
		select {
		case <-k.stop:
			return
		case <-m.Done():
		}
		select {
		case <-k.stop:
			return // the kiosk closing closes its ports too
		default:
		}
		var why error
		if e, ok := d.(interface{ Err() error }); ok {
			why = e.Err()
		}
		k.log.Error("device gone for good; not selling until the kiosk restarts", "reason", reason, "err", why)
		k.setErr(reason)
		k.statusChanged()
		if k.cfg.DeviceGone != nil {
			k.gone.Do(func() {
				// Held until the process ends: no sale starts in between.
				k.saleMu.Lock()
				k.cfg.DeviceGone(reason)
			})
		}
	}()
}

// watchLine follows a line that goes away and comes back: the kiosk sells
// on (staff log in by PIN, sheets load from the touchscreen), but the hub
// and staff hear at once, and why is the last error.
func (k *Kiosk) watchLine(l line, why string) {
	up := true
	for {
		changed := l.Changed()
		if now := l.Up(); now != up {
			up = now
			if !up {
				k.setErr(why)
			}
			k.log.Info("device line", "reason", why, "up", up)
			k.statusChanged()
		}
		select {
		case <-k.stop:
			return
		case <-changed:
		}
	}
}

// refreshPrinter asks the printer how it is, and tells the hub when that
// changed.
func (k *Kiosk) refreshPrinter() {
	ps, ok := k.printer.(printerStatus)
	if !ok {
		return
	}
	st, err := ps.Status()
	printer, paper := "ok", "ok"
	switch {
	case err != nil:
		printer = "offline"
	case st.PaperOut:
		printer, paper = "paper_out", "out"
	case !st.OK():
		printer = st.Fault()
	case st.PaperNearEnd:
		paper = "near_end"
	}
	k.ds.mu.Lock()
	changed := k.ds.printer != printer || k.ds.paper != paper
	k.ds.printer, k.ds.paper = printer, paper
	k.ds.mu.Unlock()
	if changed {
		k.log.Info("printer", "status", printer, "paper", paper)
		k.statusChanged()
	}
}

func weightOf(r scale.Reading, err error) Weight {
	w := Weight{WeightMg: r.WeightMg, Stable: r.Stable && err == nil, State: "ok"}
	switch {
	case errors.Is(err, scale.ErrOverCapacity) || r.OverCapacity:
		w.State, w.Stable = "over_capacity", false
	case errors.Is(err, scale.ErrUnderCapacity) || r.UnderCapacity:
		w.State, w.Stable = "under_capacity", false
	case errors.Is(err, scale.ErrMotion):
		// SICS and NCI say so as an error: the scale answers, the load moves.
		w.State, w.Stable = "motion", false
	case err != nil:
		w.State, w.Stable = "offline", false
	case !r.Stable:
		w.State = "motion"
	}
	return w
}

// Weight returns the last reading of the scale.
func (k *Kiosk) Weight() Weight {
	if k.dev.Scale == nil {
		return Weight{State: "offline"}
	}
	k.ds.mu.Lock()
	defer k.ds.mu.Unlock()
	return k.ds.weight
}

// weigh returns the scale's own steady weight, read after the call: a sale
// is priced on what the scale says, not on what a screen showed earlier.
// A fresh stable reading that agrees with the one before makes it steady.
func (k *Kiosk) weigh(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var prev *Weight
	w := k.Weight()
	if w.Stable {
		prev = &w
	}
	for {
		k.ds.mu.Lock()
		if k.ds.weighed == nil {
			k.ds.weighed = make(chan struct{})
		}
		next := k.ds.weighed
		k.ds.mu.Unlock()
		select {
		case <-next:
		case <-ctx.Done():
			if w.State == "under_capacity" || w.State == "offline" {
				return 0, protocol.Errorf(protocol.CodeServiceUnavailable, "the scale reads %s; staff must look at it", strings.ReplaceAll(w.State, "_", " "))
			}
			return 0, protocol.Errorf(protocol.CodeServiceUnavailable, "the scale has not settled; let the item rest on it and try again")
		}
		w = k.Weight()
		switch {
		case w.State == "over_capacity":
			return 0, protocol.Errorf(protocol.CodeOverweight, "the item is over the scale's capacity")
		case !w.Stable:
			prev = nil // motion, or a read that failed once: wait on
		case prev != nil && prev.WeightMg == w.WeightMg:
			if w.WeightMg <= 0 {
				return 0, protocol.Errorf(protocol.CodeInvalidRequest, "weight_mg: the scale is empty; place the item on it")
			}
			return w.WeightMg, nil
		default:
			prev = &w
		}
	}
}

// onScan takes a scanned code: a sheet serial loads stock while staff are
// logged in; a badge is checked by the staff login.
func (k *Kiosk) onScan(s scanner.Scan) {
	if s.Err != nil {
		k.log.Warn("unreadable scan", "err", s.Err)
		return
	}
	kind, code := scanner.Classify(s.Code)
	switch kind {
	case scanner.LabelSerial:
		if !k.staff.active() {
			k.log.Warn("sheet scanned outside staff mode; ignored")
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if res, err := k.LoadStock(ctx, []string{code}); err != nil || res.Status != protocol.ResultOK {
			k.log.Warn("sheet not loaded", "sheet", code, "err", err)
		}
	case scanner.StaffBadge:
		// The hub may check it: not on the scanner's goroutine.
		go k.staff.badgeSeen(context.Background(), code)
	}
}

// Status is whether the kiosk can sell, and why not.
type Status struct {
	InService  bool     `json:"in_service"`
	Ready      bool     `json:"ready"`
	Reasons    []string `json:"reasons"`
	LabelsLeft int      `json:"labels_left"`
	Paper      string   `json:"paper"`
	Printer    string   `json:"printer"`
	Scale      string   `json:"scale"`
	Scanner    string   `json:"scanner"` // the handheld: ok, offline, none
	LastError  string   `json:"last_error"`
	Sales      int64    `json:"sales"`
	// Message is ops' word for the screen while they hold the kiosk out
	// of service or locked.
	Message string `json:"message,omitempty"`
	// Language and IdleTimeoutS are ops' settings for the screen, if set.
	Language     string `json:"language,omitempty"`
	IdleTimeoutS int    `json:"idle_timeout_s,omitempty"`
}

// Status says whether sales may start. Sales stop when stock or paper is
// out, the label door is open, the hub is unreachable, the card terminal
// or the head scanner is gone, or staff said so.
func (k *Kiosk) Status() Status {
	t := k.telemetry()
	st := Status{Ready: k.Ready(), Reasons: []string{}, LabelsLeft: t.LabelsLeft, Paper: t.Paper, Printer: t.Printer,
		Scale: k.Weight().State, LastError: t.LastError, Sales: t.Sales}
	if k.dev.Scale == nil {
		st.Scale = "none"
	}
	switch {
	case k.dev.ScannerLine != nil && !k.dev.ScannerLine.Up():
		st.Scanner = "offline"
	case k.dev.Scans == nil:
		st.Scanner = "none"
	default:
		st.Scanner = "ok"
	}
	k.ds.mu.Lock()
	out, wrong, ops := k.ds.outOfOrder, k.ds.wrongStock, k.ds.ops
	k.ds.mu.Unlock()
	st.Reasons = append(st.Reasons, opsReasons(ops)...)
	st.Message = ops.Message
	set := k.settings()
	st.Language, st.IdleTimeoutS = set.Language, set.IdleTimeoutS
	if out {
		st.Reasons = append(st.Reasons, "out_of_service")
	}
	if wrong != "" {
		st.Reasons = append(st.Reasons, "wrong_stock") // staff reload the stock
	}
	if !st.Ready {
		st.Reasons = append(st.Reasons, "hub_offline")
	}
	if k.cfg.CertExpired != nil && k.cfg.CertExpired() {
		st.Reasons = append(st.Reasons, "certificate_expired") // ops give a new enrollment code
	}
	switch {
	case k.stockUnknown.Load():
		// Restarted with a journal: the labels left are known once the hub
		// has answered for its sheets, in a moment. Not "out of labels".
		st.Reasons = append(st.Reasons, "checking_stock")
	case st.LabelsLeft == 0:
		st.Reasons = append(st.Reasons, "out_of_labels")
	}
	if t.Paper == "out" {
		st.Reasons = append(st.Reasons, "paper_out")
	}
	if t.Printer != "ok" {
		st.Reasons = append(st.Reasons, "printer_fault")
	}
	if k.dev.Panel != nil && k.dev.Panel.DoorOpen() {
		st.Reasons = append(st.Reasons, "door_open")
	}
	// A line that failed for good: every customer would pay and fail (the
	// terminal), or buy and fail label_unread (the head scanner).
	if gone(k.dev.Terminal) {
		st.Reasons = append(st.Reasons, "terminal_offline")
	}
	if gone(k.cfg.LabelCheck) {
		st.Reasons = append(st.Reasons, "head_scanner_offline")
	}
	st.InService = len(st.Reasons) == 0
	return st
}

// SetInService is staff taking the kiosk out of service or back.
func (k *Kiosk) SetInService(on bool) {
	k.ds.mu.Lock()
	k.ds.outOfOrder = !on
	k.ds.mu.Unlock()
	k.statusChanged()
}

// statusChanged tells the hub at once, and sets the LED: on when selling,
// blinking when not.
func (k *Kiosk) statusChanged() {
	st := k.Status()
	if k.dev.Panel != nil {
		mode := gpio.LEDOn
		if !st.InService {
			mode = gpio.LEDBlink
		}
		k.dev.Panel.SetLED(mode)
	}
	if k.link != nil && k.link.Up() {
		go k.publishJSON(protocol.TopicTelemetry, k.Telemetry())
	}
}
