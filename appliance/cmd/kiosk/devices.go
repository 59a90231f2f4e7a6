package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/frank-postage/frank/appliance/gpio"
	"github.com/frank-postage/frank/appliance/kiosk"
	"github.com/frank-postage/frank/appliance/payterm"
	"github.com/frank-postage/frank/appliance/scale"
	"github.com/frank-postage/frank/appliance/scanner"
	"github.com/frank-postage/frank/appliance/serialport"
)

// devicesConfig says where the peripherals are. An empty path means the
// kiosk has no such device.
type devicesConfig struct {
	Scale         serialport.Config `json:"scale"`          // default 9600 8N1
	ScaleProtocol string            `json:"scale_protocol"` // nci (default), sics, or hx711 (then HX711, not Scale)
	// HX711 is a load cell on two GPIO pins through an HX711 amplifier.
	HX711   hx711Config       `json:"hx711"`
	Scanner serialport.Config `json:"scanner"` // default 9600 8N1
	// HeadScanner is a fixed scanner reading the pre-printed serial of the
	// label under the print head; with it a stamp prints only on its label.
	HeadScanner serialport.Config `json:"head_scanner"` // default 9600 8N1
	Terminal    serialport.Config `json:"terminal"`     // default 115200 8N1
	GPIO        string            `json:"gpio"`         // "host" (Raspberry Pi header pins) or "sim:/path/to/socket"
}

// hx711Config places an HX711 load cell on the GPIO header.
type hx711Config struct {
	Clock     string `json:"clock"`      // PD_SCK pin; default GPIO5
	Data      string `json:"data"`       // DOUT pin; default GPIO6
	CapacityG int64  `json:"capacity_g"` // heavier reads over capacity; 0: no limit
	// Calibration is where staff's zero and calibration are kept across
	// reboots; default /var/lib/frank/scale-calibration.json.
	Calibration string `json:"calibration"`
}

// withDefaults fills in the baud rates scales and scanners ship with.
func (c devicesConfig) withDefaults() devicesConfig {
	for _, l := range []*serialport.Config{&c.Scale, &c.Scanner, &c.HeadScanner} {
		if l.Baud == 0 {
			l.Baud = 9600
		}
	}
	return c
}

// openDevices opens what the config names; closers undo it. head is the
// head scanner, if there is one.
func openDevices(ctx context.Context, c devicesConfig, log *slog.Logger) (d kiosk.Devices, head *scanner.Head, closers []io.Closer, err error) {
	fail := func(err error) (kiosk.Devices, *scanner.Head, []io.Closer, error) {
		for _, c := range closers {
			c.Close()
		}
		return kiosk.Devices{}, nil, nil, err
	}
	c = c.withDefaults()
	switch c.ScaleProtocol {
	case "", "nci", "sics", "hx711":
	default:
		return fail(fmt.Errorf("scale protocol %q: want nci, sics or hx711", c.ScaleProtocol))
	}
	if c.ScaleProtocol == "hx711" {
		h, err := openHX711(c.HX711)
		if err != nil {
			return fail(err)
		}
		d.Scale = h
	} else if c.Scale.Path != "" {
		// A Line: an unplugged scale reads offline, and is read again
		// once it is back.
		p, err := serialport.OpenLine(c.Scale, serialport.LineOptions{Log: log.With("device", "scale")})
		if err != nil {
			return fail(err)
		}
		closers = append(closers, p)
		if c.ScaleProtocol == "sics" {
			d.Scale = scale.NewSICS(p, time.Second)
		} else {
			d.Scale = scale.NewNCI(p, time.Second)
		}
	}
	if c.Scanner.Path != "" {
		p, err := serialport.OpenLine(c.Scanner, serialport.LineOptions{Log: log.With("device", "scanner")})
		if err != nil {
			return fail(err)
		}
		closers = append(closers, p)
		d.Scans, d.ScannerLine = scanner.Follow(ctx, p), p
	}
	if c.HeadScanner.Path != "" {
		p, err := serialport.Open(c.HeadScanner)
		if err != nil {
			return fail(err)
		}
		closers = append(closers, p)
		head = scanner.NewHead()
		go head.Run(scanner.New(p).Scans(ctx))
	}
	if c.Terminal.Path != "" {
		p, err := serialport.Open(c.Terminal)
		if err != nil {
			return fail(err)
		}
		closers = append(closers, p)
		d.Terminal = payterm.New(p, payterm.Config{Log: log.With("device", "terminal")})
	}
	switch {
	case c.GPIO == "":
	case c.GPIO == "host":
		pn, err := gpio.OpenHost(gpio.Pins{})
		if err != nil {
			return fail(err)
		}
		closers = append(closers, pn)
		d.Panel = pn
	case len(c.GPIO) > 4 && c.GPIO[:4] == "sim:":
		pn, err := gpio.OpenSim(c.GPIO[4:])
		if err != nil {
			return fail(err)
		}
		closers = append(closers, pn)
		d.Panel = pn
	default:
		return fail(fmt.Errorf("gpio %q: want host or sim:SOCKET", c.GPIO))
	}
	return d, head, closers, nil
}

// openHX711 opens the load cell on the Pi's GPIO header, with the
// calibration staff left it.
func openHX711(c hx711Config) (*scale.HX711, error) {
	or := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	clk, err := gpio.HostPin(or(c.Clock, "GPIO5"))
	if err != nil {
		return nil, fmt.Errorf("hx711 clock: %w", err)
	}
	data, err := gpio.HostPin(or(c.Data, "GPIO6"))
	if err != nil {
		return nil, fmt.Errorf("hx711 data: %w", err)
	}
	h, err := scale.NewHX711(clk, data, scale.HX711Config{CapacityMg: c.CapacityG * 1000})
	if err != nil {
		return nil, err
	}
	if err := h.KeepCalibration(or(c.Calibration, "/var/lib/frank/scale-calibration.json")); err != nil {
		return nil, err
	}
	return h, nil
}
