// Package escpos speaks ESC/POS to a thermal label printer: initialize,
// raster images with GS v 0 sent in bands, cut, and the real-time status
// query DLE EOT. No Go ESC/POS library is maintained, and the part we need
// is small.
package escpos

import (
	"errors"
	"fmt"
	"image"
)

// Command bytes.
const (
	esc = 0x1B
	gs  = 0x1D
	dle = 0x10
	eot = 0x04
)

// BandRows is how many raster rows go in one GS v 0 command. Printers
// buffer a band before printing it; small bands keep cheap printers from
// overflowing.
const BandRows = 64

// MaxRowBytes is the widest raster row Raster sends, 1024 dots: wider than
// any thermal label or receipt head. With BandRows it bounds how much data
// a printer can still be waiting for when a sender dies mid-image.
const MaxRowBytes = 128

// rasterHeader is the length of GS v 0 m xL xH yL yH.
const rasterHeader = 8

// Resync brings a printer out of a command a dead sender cut short, above
// all a raster band: the printer would take whatever comes next as image
// data, status queries included. It is zeros enough for the largest band
// Raster sends, header and all, then ESC @. A zero is a white dot in
// raster data (the interrupted label, spoiled anyway, gets a blank tail),
// completes a header with an out-of-range size (the command is ignored),
// and alone is NUL, which ESC/POS printers ignore: sent to a printer with
// nothing pending, it prints nothing and feeds nothing.
func Resync() []byte {
	b := make([]byte, rasterHeader+MaxRowBytes*BandRows, rasterHeader+MaxRowBytes*BandRows+2)
	return append(b, Init()...)
}

// Init resets the printer: ESC @.
func Init() []byte { return []byte{esc, '@'} }

// Cut feeds to the cutter and cuts: GS V 66 0 (function B, partial cut).
func Cut() []byte { return []byte{gs, 'V', 66, 0} }

// Raster encodes img as GS v 0 commands in bands of BandRows. A pixel is
// printed (a dot) where img is dark. Rows are padded to whole bytes.
func Raster(img image.Image) ([]byte, error) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if w <= 0 || h <= 0 {
		return nil, errors.New("escpos: raster: empty image")
	}
	rowBytes := (w + 7) / 8
	if rowBytes > MaxRowBytes {
		return nil, fmt.Errorf("escpos: raster: %d dots wide is wider than %d", w, MaxRowBytes*8)
	}
	out := make([]byte, 0, h*rowBytes+(h/BandRows+1)*rasterHeader)
	for y0 := 0; y0 < h; y0 += BandRows {
		rows := min(BandRows, h-y0)
		out = append(out, gs, 'v', '0', 0, byte(rowBytes), byte(rowBytes>>8), byte(rows), byte(rows>>8))
		for y := y0; y < y0+rows; y++ {
			for xb := range rowBytes {
				var v byte
				for bit := range 8 {
					x := xb*8 + bit
					if x < w && dark(img, b.Min.X+x, b.Min.Y+y) {
						v |= 0x80 >> bit
					}
				}
				out = append(out, v)
			}
		}
	}
	return out, nil
}

func dark(img image.Image, x, y int) bool {
	r, g, bl, _ := img.At(x, y).RGBA()
	return r+g+bl < 3*0x8000
}

// Status queries, DLE EOT n.
const (
	StatusPrinter = 1 // printer status
	StatusOffline = 2 // offline cause
	StatusError   = 3 // error cause
	StatusPaper   = 4 // roll paper sensor
)

// StatusQuery returns DLE EOT n.
func StatusQuery(n byte) []byte { return []byte{dle, eot, n} }

// Status is the printer's state as the four status bytes tell it.
type Status struct {
	Offline       bool
	CoverOpen     bool
	PaperNearEnd  bool
	PaperOut      bool
	CutterError   bool // autocutter error: a jam at the cutter
	Unrecoverable bool
}

// OK reports whether the printer can print.
func (s Status) OK() bool {
	return !s.Offline && !s.CoverOpen && !s.PaperOut && !s.CutterError && !s.Unrecoverable
}

// Fault names the first reason the printer cannot print, for the kiosk's
// error code; empty when OK.
func (s Status) Fault() string {
	switch {
	case s.CoverOpen:
		return "cover_open"
	case s.PaperOut:
		return "paper_out"
	case s.CutterError:
		return "jam"
	case s.Unrecoverable:
		return "printer_error"
	case s.Offline:
		return "offline"
	}
	return ""
}

// ErrStatusByte means a status reply is not a status byte: every reply has
// bit 1 and bit 4 set and bits 0 and 7 clear.
var ErrStatusByte = errors.New("escpos: not a status byte")

func checkStatusByte(b byte) error {
	if b&0x93 != 0x12 {
		return fmt.Errorf("%w: %#02x", ErrStatusByte, b)
	}
	return nil
}

// ParseStatus reads the replies to DLE EOT 1, 2, 3 and 4, in that order.
func ParseStatus(printer, offline, errs, paper byte) (Status, error) {
	for _, b := range []byte{printer, offline, errs, paper} {
		if err := checkStatusByte(b); err != nil {
			return Status{}, err
		}
	}
	return Status{
		Offline:       printer&0x08 != 0,
		CoverOpen:     offline&0x04 != 0,
		PaperOut:      offline&0x20 != 0 || paper&0x60 == 0x60,
		PaperNearEnd:  paper&0x0C == 0x0C,
		CutterError:   errs&0x08 != 0,
		Unrecoverable: errs&0x20 != 0,
	}, nil
}
