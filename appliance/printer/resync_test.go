package printer_test

import (
	"bytes"
	"errors"
	"image"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/escpos"
	"github.com/frank-postage/frank/appliance/printer"
)

// okPort is a printer that answers every status query ready, records what
// it was sent, and fails the write failAt (counting from 1) half way.
type okPort struct {
	writes  [][]byte
	failAt  int
	replies int
}

func (p *okPort) Write(b []byte) (int, error) {
	if len(p.writes)+1 == p.failAt {
		p.writes = append(p.writes, append([]byte(nil), b[:len(b)/2]...))
		return len(b) / 2, errors.New("line dropped")
	}
	p.writes = append(p.writes, append([]byte(nil), b...))
	if bytes.HasPrefix(b, escpos.StatusQuery(1)[:2]) {
		p.replies++
	}
	return len(b), nil
}

func (p *okPort) Read(b []byte) (int, error) {
	if p.replies == 0 {
		return 0, nil
	}
	p.replies--
	b[0] = 0x12 // ready, every status
	return 1, nil
}

func (p *okPort) SetReadTimeout(time.Duration) error { return nil }
func (p *okPort) ResetInputBuffer() error            { return nil }

// A printer opened at kiosk start is resynced before anything else (the
// kiosk before may have died mid-label), without a cut: nothing pending,
// no paper fed. A label whose write failed is resynced at once and cut
// off, spoiled, so the next stamp does not come out behind it.
func TestResyncAtOpenAndAfterFailedWrite(t *testing.T) {
	label := image.NewGray(image.Rect(0, 0, 8, 2))
	p := &okPort{failAt: 6} // 4 status queries, then the job
	pr := printer.Open(p, 0)
	err := pr.Print(label)
	if err == nil {
		t.Fatal("a label half written printed")
	}
	if !bytes.Equal(p.writes[0], escpos.Resync()) {
		t.Fatalf("first write after Open: %d bytes, want escpos.Resync", len(p.writes[0]))
	}
	last := p.writes[len(p.writes)-1]
	if want := append(escpos.Resync(), escpos.Cut()...); !bytes.Equal(last, want) {
		t.Fatalf("after the failed write: % x..., want escpos.Resync and a cut", last[len(last)-8:])
	}
	// Resynced: the next label goes straight to its status queries.
	n := len(p.writes)
	if err := pr.Print(label); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(p.writes[n], escpos.Resync()) {
		t.Fatal("resynced again with nothing cut short")
	}
}
