package printer

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/escpos"
)

// fuzzPort answers reads from a fuzzed stream of replies: a byte per read
// while they last, then silence; failRead, when in range, is the read that
// fails instead. It records what the printer was sent.
type fuzzPort struct {
	replies  []byte
	reads    int
	failRead int
	sent     []byte
}

var errLine = errors.New("line dropped")

func (p *fuzzPort) Write(b []byte) (int, error) { p.sent = append(p.sent, b...); return len(b), nil }
func (p *fuzzPort) Read(b []byte) (int, error) {
	p.reads++
	if p.reads == p.failRead {
		return 0, errLine
	}
	if len(p.replies) == 0 || len(b) == 0 {
		return 0, nil
	}
	n := copy(b, p.replies)
	p.replies = p.replies[n:]
	return n, nil
}
func (p *fuzzPort) SetReadTimeout(time.Duration) error { return nil }
func (p *fuzzPort) ResetInputBuffer() error            { return nil }

// status reads whatever the serial line gives back to DLE EOT 1-4. Held:
// it never panics; it asks the four queries in order, one per reply, and no
// more; a short answer is ErrSilent, a failed read is that error, a reply
// that is not status bytes is escpos.ErrStatusByte; and what it takes is
// exactly escpos.ParseStatus of the first four bytes.
func FuzzPrinterStatus(f *testing.F) {
	f.Add([]byte{0x12, 0x12, 0x12, 0x12}, 0)
	f.Add([]byte{0x1A, 0x52, 0x1A, 0x12}, 0)
	f.Add([]byte{0x12, 0x12}, 0)
	f.Add([]byte{0x12, 0x12, 0x12, 0x12, 0xFF}, 0)
	f.Add([]byte{0xFF, 0x12, 0x12, 0x12}, 0)
	f.Add([]byte{0x12, 0x12, 0x12, 0x12}, 3)
	f.Add([]byte{}, 1)
	f.Fuzz(func(t *testing.T, replies []byte, failRead int) {
		port := &fuzzPort{replies: bytes.Clone(replies), failRead: failRead}
		p := New(port, time.Millisecond)
		s, err := p.status()
		var want []byte
		for i := 1; i <= min(port.reads, 4); i++ {
			want = append(want, escpos.StatusQuery(byte(i))...)
		}
		if port.reads > 4 || !bytes.Equal(port.sent, want) {
			t.Fatalf("after %d reads sent % x, want % x", port.reads, port.sent, want)
		}
		switch {
		case failRead >= 1 && failRead <= 4 && failRead <= len(replies)+1:
			if !errors.Is(err, errLine) {
				t.Fatalf("read %d failed, got %+v, %v", failRead, s, err)
			}
		case len(replies) < 4:
			if !errors.Is(err, ErrSilent) {
				t.Fatalf("%d replies: got %+v, %v; want ErrSilent", len(replies), s, err)
			}
		default:
			ws, werr := escpos.ParseStatus(replies[0], replies[1], replies[2], replies[3])
			if werr != nil {
				if !errors.Is(err, escpos.ErrStatusByte) {
					t.Fatalf("% x: got %+v, %v; want ErrStatusByte", replies[:4], s, err)
				}
			} else if err != nil || s != ws {
				t.Fatalf("% x: got %+v, %v; want %+v", replies[:4], s, err, ws)
			}
		}
		if err != nil && s != (escpos.Status{}) {
			t.Fatalf("error %v with a status %+v", err, s)
		}
	})
}
