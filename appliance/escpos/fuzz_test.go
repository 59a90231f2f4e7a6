package escpos_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/frank-postage/frank/appliance/escpos"
)

// The four status bytes come straight off the printer's serial line, where
// noise, a printer still inside a command, or another device's replies can
// put anything. ParseStatus takes a frame only if every byte has the fixed
// bits ESC/POS gives a status reply (anything else is ErrStatusByte and a
// zero Status), and what it takes is coherent: OK exactly when Fault is
// empty, Fault one of the kiosk's reason codes, paper out never OK.
func FuzzParseStatus(f *testing.F) {
	f.Add(byte(0x12), byte(0x12), byte(0x12), byte(0x12)) // idle
	f.Add(byte(0x1A), byte(0x16), byte(0x12), byte(0x12)) // cover open
	f.Add(byte(0x1A), byte(0x32), byte(0x12), byte(0x72)) // paper out
	f.Add(byte(0x1A), byte(0x52), byte(0x1A), byte(0x12)) // jam
	f.Add(byte(0x1A), byte(0x52), byte(0x32), byte(0x12)) // unrecoverable
	f.Add(byte(0x12), byte(0x12), byte(0x12), byte(0x1E)) // near end
	f.Add(byte(0xFF), byte(0x12), byte(0x12), byte(0x12)) // not a status byte
	f.Add(byte(0x12), byte(0x12), byte(0x12), byte(0x00)) // silence read as zero
	faults := []string{"", "cover_open", "paper_out", "jam", "printer_error", "offline"}
	f.Fuzz(func(t *testing.T, p, o, e, r byte) {
		s, err := escpos.ParseStatus(p, o, e, r)
		framed := true
		for _, b := range []byte{p, o, e, r} {
			framed = framed && b&0x93 == 0x12
		}
		if err != nil {
			if framed {
				t.Fatalf("% x: refused a well-framed reply: %v", []byte{p, o, e, r}, err)
			}
			if !errors.Is(err, escpos.ErrStatusByte) || s != (escpos.Status{}) {
				t.Fatalf("% x: refused with %v and %+v, want ErrStatusByte and no status", []byte{p, o, e, r}, err, s)
			}
			return
		}
		if !framed {
			t.Fatalf("% x: took a reply that is not status bytes: %+v", []byte{p, o, e, r}, s)
		}
		if s.OK() != (s.Fault() == "") || !slices.Contains(faults, s.Fault()) || s.PaperOut && s.OK() {
			t.Fatalf("% x: incoherent status %+v (ok %v, fault %q)", []byte{p, o, e, r}, s, s.OK(), s.Fault())
		}
	})
}
