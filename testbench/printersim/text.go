package printersim

import (
	"bufio"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
	"golang.org/x/text/encoding/charmap"
)

// textState is a receipt in text mode: the lines printed so far and the
// modes in force for the next.
type textState struct {
	lines               []textLine
	cur                 []byte
	bold, large, center bool
	codePage            byte
}

type textLine struct {
	text                string
	bold, large, center bool
}

// put adds a byte of text; a line feed prints the line.
func (t *textState) put(b byte) {
	if b != '\n' {
		t.cur = append(t.cur, b)
		return
	}
	s := string(t.cur)
	if t.codePage == 19 {
		s, _ = charmap.CodePage858.NewDecoder().String(s)
	}
	t.lines = append(t.lines, textLine{text: s, bold: t.bold, large: t.large, center: t.center})
	t.cur = nil
}

// escText runs the text-mode ESC commands: c 0 (paper station), t (code
// page), E (emphasis), a (justification), d (feed lines).
func (p *Printer) escText(r *bufio.Reader, c byte) error {
	n, err := r.ReadByte()
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch c {
	case 'c':
		if n != '0' {
			return fmt.Errorf("unsupported ESC c %#02x", n)
		}
		m, err := r.ReadByte()
		if err != nil {
			return err
		}
		p.receipt = m&0x02 != 0 // roll paper: the receipt station
	case 't':
		if n != 0 && n != 19 {
			return fmt.Errorf("unsupported code page %d", n)
		}
		p.text.codePage = n
	case 'E':
		p.text.bold = n&1 != 0
	case 'a':
		p.text.center = n == 1
	case 'd':
		for range n {
			p.text.put('\n')
		}
	default:
		return fmt.Errorf("unsupported ESC %#02x", c)
	}
	return nil
}

// Receipts returns the receipt PNGs written so far; each has its text
// beside it, in a .txt of the same name.
func (p *Printer) Receipts() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.receipts...)
}

// NextReceipt returns a channel that receives the path of the next
// receipt cut.
func (p *Printer) NextReceipt() <-chan string {
	ch := make(chan string, 1)
	p.mu.Lock()
	p.rwaiters = append(p.rwaiters, ch)
	p.mu.Unlock()
	return ch
}

// cutReceipt renders a receipt as the printer would, with its own font
// (basicfont, doubled for large text), and writes the image and the text.
func (p *Printer) cutReceipt(t textState) error {
	if len(t.cur) > 0 {
		t.put('\n')
	}
	const cols = 42
	face := basicfont.Face7x13
	cw, ch := 7*2, 13*2+4 // font A: every glyph doubled, as at 203 dpi
	height := 16
	for _, l := range t.lines {
		height += ch * scale(l.large)
	}
	img := image.NewGray(image.Rect(0, 0, cols*cw+16, height))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	y := 8
	var text strings.Builder
	for _, l := range t.lines {
		text.WriteString(strings.TrimRight(l.text, " ") + "\n")
		s := scale(l.large)
		line := image.NewGray(image.Rect(0, 0, len([]rune(l.text))*7+1, 13))
		draw.Draw(line, line.Bounds(), image.White, image.Point{}, draw.Src)
		d := font.Drawer{Dst: line, Src: image.Black, Face: face, Dot: fixed.P(0, 11)}
		d.DrawString(l.text)
		if l.bold {
			d.Dot = fixed.P(1, 11)
			d.DrawString(l.text)
		}
		x0 := 8
		if l.center {
			x0 = 8 + (cols*cw-line.Bounds().Dx()*2*s)/2
		}
		for py := range 13 * 2 * s {
			for px := range line.Bounds().Dx() * 2 * s {
				if line.GrayAt(px/(2*s), py/(2*s)).Y < 128 {
					img.SetGray(x0+px, y+py, color.Gray{})
				}
			}
		}
		y += ch * s
	}
	p.mu.Lock()
	p.rseq++
	name := filepath.Join(p.outDir, fmt.Sprintf("receipt-%04d.png", p.rseq))
	p.mu.Unlock()
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.WriteFile(strings.TrimSuffix(name, ".png")+".txt", []byte(text.String()), 0o644); err != nil {
		return err
	}
	p.log.Info("receipt printed", "png", name, "lines", len(t.lines))
	p.mu.Lock()
	p.receipts = append(p.receipts, name)
	ws := p.rwaiters
	p.rwaiters = nil
	p.mu.Unlock()
	for _, w := range ws {
		w <- name
	}
	return nil
}

func scale(large bool) int {
	if large {
		return 2
	}
	return 1
}
