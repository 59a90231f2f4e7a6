package printersim

import (
	"bufio"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/gomono"
	"golang.org/x/image/font/gofont/gomonobold"
	"golang.org/x/image/font/opentype"
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

// receiptFaces are the printer's fonts: Go Mono at the size of an
// ESC/POS font A line (12 × 24 dots at 203 dpi), regular and bold, and
// doubled for large text.
var receiptFaces = sync.OnceValues(func() (map[[2]bool]font.Face, error) {
	out := map[[2]bool]font.Face{}
	for _, f := range []struct {
		ttf  []byte
		bold bool
	}{{gomono.TTF, false}, {gomonobold.TTF, true}} {
		ft, err := opentype.Parse(f.ttf)
		if err != nil {
			return nil, err
		}
		for _, large := range []bool{false, true} {
			size := 20.0
			if large {
				size = 40
			}
			face, err := opentype.NewFace(ft, &opentype.FaceOptions{Size: size, DPI: 72, Hinting: font.HintingFull})
			if err != nil {
				return nil, err
			}
			out[[2]bool{f.bold, large}] = face
		}
	}
	return out, nil
})

// cutReceipt renders a receipt as the printer would, in its own font, and
// writes the image and the text beside it.
func (p *Printer) cutReceipt(t textState) error {
	if len(t.cur) > 0 {
		t.put('\n')
	}
	faces, err := receiptFaces()
	if err != nil {
		return err
	}
	const cols, cw, ch, margin = 42, 12, 24, 12 // font A on 80 mm paper
	height := 2 * margin
	for _, l := range t.lines {
		height += ch * scale(l.large)
	}
	gray := image.NewGray(image.Rect(0, 0, cols*cw+2*margin, height))
	draw.Draw(gray, gray.Bounds(), image.White, image.Point{}, draw.Src)
	y := margin
	var text strings.Builder
	for _, l := range t.lines {
		text.WriteString(strings.TrimRight(l.text, " ") + "\n")
		s := scale(l.large)
		face := faces[[2]bool{l.bold, l.large}]
		x := margin
		if l.center {
			x = margin + (cols*cw-font.MeasureString(face, l.text).Round())/2
		}
		d := font.Drawer{Dst: gray, Src: image.Black, Face: face, Dot: fixed.P(x, y+ch*s*4/5)}
		d.DrawString(l.text)
		y += ch * s
	}
	// A thermal head has dots, not greys.
	img := image.NewPaletted(gray.Bounds(), color.Palette{color.White, color.Black})
	for py := range gray.Bounds().Dy() {
		for px := range gray.Bounds().Dx() {
			if gray.GrayAt(px, py).Y < 128 {
				img.SetColorIndex(px, py, 1)
			}
		}
	}
	p.mu.Lock()
	p.rseq++
	name := filepath.Join(p.outDir, fmt.Sprintf("receipt-%04d.png", p.rseq))
	p.mu.Unlock()
	if err := writePNG(name, img); err != nil {
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
