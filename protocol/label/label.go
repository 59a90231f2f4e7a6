// Package label renders a stamp as a 1-bit image for a 203-dpi thermal
// printer: the indicium's DataMatrix with its quiet zone, and beside it the
// human-readable amount, service, date, origin ZIP, meter number and label
// serial. The kiosk prints it; the hub's portal places it on a PDF sheet.
package label

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"sync"

	"github.com/boombuler/barcode/datamatrix"
	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/gomonobold"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"

	"github.com/frank-postage/frank/protocol"
)

// DPI is the resolution of common thermal label printers.
const DPI = 203

// Default label size: 2 in × 1 in.
const (
	DefaultWidth  = 2 * DPI
	DefaultHeight = 1 * DPI
)

// QuietZone is the blank border around the symbol, in modules. ECC200 asks
// for one; two survive a label that sits slightly off the print head.
const QuietZone = 2

// Palette is the 1-bit palette: index 0 white paper, index 1 black dot.
var Palette = color.Palette{color.White, color.Black}

// Stamp is what a label shows.
type Stamp struct {
	Matrix    []byte // the 113-byte indicium
	Amount    protocol.Mills
	Service   string // e.g. "FIRST-CLASS"
	Date      protocol.Date
	OriginZIP string
	Meter     string
	Serial    string // label serial, e.g. "1966-F8CF-03"
}

// FromIndicium fills a Stamp from a decoded indicium and its bytes.
func FromIndicium(in *protocol.Indicium, matrix []byte, service string) Stamp {
	return Stamp{
		Matrix:    matrix,
		Amount:    in.Postage,
		Service:   service,
		Date:      in.Date,
		OriginZIP: string(protocol.ZIPFromNumber(in.OriginZIP)),
		Meter:     in.MeterNumber(),
		Serial:    in.Label.String(),
	}
}

// Size is a label size in printer dots.
type Size struct{ Width, Height int }

// Render draws s on a label of the given size (zero means 2 in × 1 in).
func Render(s Stamp, size Size) (*image.Paletted, error) {
	if size == (Size{}) {
		size = Size{DefaultWidth, DefaultHeight}
	}
	if len(s.Matrix) != protocol.IndiciumLen {
		return nil, fmt.Errorf("label: render: matrix is %d bytes, want %d", len(s.Matrix), protocol.IndiciumLen)
	}
	sym, err := Symbol(s.Matrix)
	if err != nil {
		return nil, err
	}
	margin := size.Height / 25
	modules := sym.Bounds().Dx() + 2*QuietZone
	module := (size.Height - 2*margin) / modules
	if module < 2 {
		return nil, fmt.Errorf("label: render: %d dots high is too small for a %d-module symbol", size.Height, modules)
	}
	img := image.NewPaletted(image.Rect(0, 0, size.Width, size.Height), Palette)
	// The code sits centred in the square at the left; text starts right
	// of it at the same place whatever the symbol size.
	codeSide := modules * module
	left := (size.Height - codeSide) / 2
	drawSymbol(img, sym, left+QuietZone*module, left+QuietZone*module, module)

	textX := size.Height
	if size.Width-textX < size.Width/3 {
		return nil, fmt.Errorf("label: render: %d dots wide leaves no room for text", size.Width)
	}
	faces, err := loadFaces(size.Height)
	if err != nil {
		return nil, err
	}
	defer faces.Close()
	lines := []struct {
		face font.Face
		text string
	}{
		{faces.big, s.Amount.String()},
		{faces.small, s.Service},
		{faces.small, s.Date.String()},
		{faces.small, "ZIP " + s.OriginZIP},
		{faces.small, s.Meter},
		{faces.small, s.Serial},
	}
	gray := image.NewGray(img.Bounds())
	draw.Draw(gray, gray.Bounds(), image.White, image.Point{}, draw.Src)
	y := left
	room := fixed.I(size.Width - textX - margin)
	for _, l := range lines {
		face := l.face
		if font.MeasureString(face, l.text) > room {
			face = faces.small // a large amount still fits
		}
		m := face.Metrics()
		y += m.Ascent.Ceil()
		d := font.Drawer{Dst: gray, Src: image.Black, Face: face, Dot: fixed.P(textX, y)}
		d.DrawString(l.text)
		y += m.Descent.Ceil() + size.Height/60
	}
	// Thermal heads print dots, not grey: threshold at half.
	b := gray.Bounds()
	for py := b.Min.Y; py < b.Max.Y; py++ {
		for px := textX; px < b.Max.X; px++ {
			if gray.GrayAt(px, py).Y < 128 {
				img.SetColorIndex(px, py, 1)
			}
		}
	}
	return img, nil
}

// Symbol encodes the indicium as an ECC200 DataMatrix, one pixel per
// module, without quiet zone.
func Symbol(matrix []byte) (image.Image, error) {
	// boombuler switches to GS1 mode when the first byte is FNC1; a v1
	// indicium starts with its version, 1, so this only guards the future.
	if len(matrix) > 0 && matrix[0] == datamatrix.FNC1 {
		return nil, errors.New("label: symbol: payload starting with 0xE8 would be read as GS1")
	}
	code, err := datamatrix.Encode(string(matrix))
	if err != nil {
		return nil, fmt.Errorf("label: symbol: %w", err)
	}
	return code, nil
}

func drawSymbol(img *image.Paletted, sym image.Image, x0, y0, module int) {
	b := sym.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if r, _, _, _ := sym.At(x, y).RGBA(); r > 0x7FFF {
				continue // white module
			}
			px, py := x0+(x-b.Min.X)*module, y0+(y-b.Min.Y)*module
			for dy := range module {
				for dx := range module {
					img.SetColorIndex(px+dx, py+dy, 1)
				}
			}
		}
	}
}

type faceSet struct{ big, small font.Face }

func (f faceSet) Close() { f.big.Close(); f.small.Close() }

var (
	fontOnce sync.Once
	fontErr  error
	monoBold *opentype.Font
)

// loadFaces sizes the text to the label height: six lines must fit. Faces
// are not safe for concurrent use, so each render makes its own.
func loadFaces(height int) (faceSet, error) {
	fontOnce.Do(func() { monoBold, fontErr = opentype.Parse(gomonobold.TTF) })
	if fontErr != nil {
		return faceSet{}, fmt.Errorf("label: font: %w", fontErr)
	}
	// Points at 203 dpi: a 1 in label gets 15 pt for the amount, 7 pt text.
	scale := float64(height) / DPI
	big, err := opentype.NewFace(monoBold, &opentype.FaceOptions{Size: 15 * scale, DPI: DPI, Hinting: font.HintingFull})
	if err != nil {
		return faceSet{}, fmt.Errorf("label: font: %w", err)
	}
	small, err := opentype.NewFace(monoBold, &opentype.FaceOptions{Size: 7 * scale, DPI: DPI, Hinting: font.HintingFull})
	if err != nil {
		return faceSet{}, fmt.Errorf("label: font: %w", err)
	}
	return faceSet{big, small}, nil
}
