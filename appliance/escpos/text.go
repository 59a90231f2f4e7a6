package escpos

import (
	"fmt"
	"strings"

	"golang.org/x/text/encoding/charmap"
)

// Text builds a receipt in the printer's own font: text mode, not raster,
// on the receipt roll. Receipts are text so that any printer prints them
// at its best and a printer emulator can read them back.
type Text struct {
	buf []byte
	err error
}

// Columns is the width of a receipt line in the printer's font A
// on 80 mm paper at 203 dpi, less a margin.
const Columns = 42

// Code page 858 is 850 with the euro sign: the Latin letters of English
// and Spanish. ESC t 19 selects it on Epson-compatible printers.
const codePage858 = 19

// NewText starts a receipt: reset, the receipt station (ESC c 0 2, roll
// paper, so label stock is never spent on one), code page 858.
func NewText() *Text {
	t := &Text{}
	t.buf = append(t.buf, esc, '@', esc, 'c', '0', 2, esc, 't', codePage858)
	return t
}

// Bold turns emphasis on or off (ESC E n).
func (t *Text) Bold(on bool) *Text {
	t.buf = append(t.buf, esc, 'E', b2i(on))
	return t
}

// Center centres the lines that follow, or goes back to the left (ESC a n).
func (t *Text) Center(on bool) *Text {
	t.buf = append(t.buf, esc, 'a', b2i(on))
	return t
}

// Large prints at double width and height, or normal (GS ! n).
func (t *Text) Large(on bool) *Text {
	n := byte(0)
	if on {
		n = 0x11
	}
	t.buf = append(t.buf, gs, '!', n)
	return t
}

// Line prints s and a line feed. Characters outside code page 858 are an
// error, reported by Bytes: a receipt never prints a wrong letter.
func (t *Text) Line(s string) *Text {
	for _, r := range s {
		if r == '\n' || r == '\r' || r < 0x20 {
			continue // one line each; control bytes would be commands
		}
		b, ok := charmap.CodePage858.EncodeRune(r)
		if !ok {
			if t.err == nil {
				t.err = fmt.Errorf("escpos: %q has no glyph in code page 858", r)
			}
			b = '?'
		}
		t.buf = append(t.buf, b)
	}
	t.buf = append(t.buf, '\n')
	return t
}

// Pair prints left and right on one line, right aligned to Columns; a
// pair too long for one line takes two.
func (t *Text) Pair(left, right string) *Text {
	pad := Columns - len([]rune(left)) - len([]rune(right))
	if pad < 1 {
		return t.Line(left).Line(strings.Repeat(" ", max(Columns-len([]rune(right)), 0)) + right)
	}
	return t.Line(left + strings.Repeat(" ", pad) + right)
}

// Wrap prints s as a paragraph, broken at spaces to fit Columns.
func (t *Text) Wrap(s string) *Text {
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len([]rune(line))+1+len([]rune(w)) > Columns {
			t.Line(line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	if line != "" {
		t.Line(line)
	}
	return t
}

// Rule prints a line of dashes.
func (t *Text) Rule() *Text { return t.Line(strings.Repeat("-", Columns)) }

// Feed feeds n lines (ESC d n).
func (t *Text) Feed(n byte) *Text {
	t.buf = append(t.buf, esc, 'd', n)
	return t
}

// Bytes returns the job, ending in a cut, or the first error.
func (t *Text) Bytes() ([]byte, error) {
	if t.err != nil {
		return nil, t.err
	}
	out := append([]byte(nil), t.buf...)
	out = append(out, esc, 'd', 3)
	return append(out, Cut()...), nil
}

func b2i(on bool) byte {
	if on {
		return 1
	}
	return 0
}
