// Package sheetpdf renders the stamps a web customer bought as a one-page
// PDF to print at home on a pre-serialized sheet of label stock: each stamp
// lands on the label cell of its position and the other cells stay blank,
// because they may be used already or be printed later.
package sheetpdf

import (
	"errors"
	"fmt"
	"image"
	"io"
	"time"

	"github.com/go-pdf/fpdf"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/label"
)

// Stamp is one stamp to place on the sheet.
type Stamp struct {
	Position uint8    // 1..protocol.LabelsPerSheet
	Matrix   []byte   // the indicium bytes, as signed
	Lines    []string // text beside the symbol; the first is printed bold, so put the postage there
}

// Layout is the geometry of a sheet of label stock, in millimetres.
// Positions run left to right, then top to bottom, as label stock is
// numbered.
type Layout struct {
	PageWidth, PageHeight   float64
	Top, Left               float64 // page edge to the first label
	Columns, Rows           int     // must make protocol.LabelsPerSheet cells
	LabelWidth, LabelHeight float64
	ColumnGap, RowGap       float64
	Module                  float64 // side of one DataMatrix module
}

const inch = 25.4

// Letter10 is US Letter with 2 × 5 labels of 4 in × 2 in, the geometry of
// Avery 5163. The module is 0.02 in: exactly 6 dots at 300 dpi and 12 at
// 600 dpi, so common printers draw every module the same width.
var Letter10 = Layout{
	PageWidth: 8.5 * inch, PageHeight: 11 * inch,
	Top: 0.5 * inch, Left: 5.0 / 32 * inch,
	Columns: 2, Rows: 5,
	LabelWidth: 4 * inch, LabelHeight: 2 * inch,
	ColumnGap: 3.0 / 16 * inch,
	Module:    0.02 * inch,
}

// Inside a cell: padding survives a sheet fed slightly askew; the gap
// separates the symbol's quiet zone from the text.
const (
	padding  = 3.0 // mm
	textGap  = 2.0 // mm
	bodyPt   = 9.0
	firstPt  = 11.0
	headerPt = 8.0
	minPt    = 5.0 // below this a line is unreadable on a home printer
	ptMM     = inch / 72
	leading  = 1.25
)

// created is fixed so that the same sheet always renders to the same bytes;
// the date that matters is the date of mailing inside each indicium.
var created = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Render writes a one-page PDF of the sheet with each stamp in its cell and
// the label serial under its lines. It writes nothing to w when it fails,
// so an HTTP handler can still answer with an error.
func Render(w io.Writer, sheet protocol.SheetSerial, stamps []Stamp, layout Layout) error {
	if err := render(w, sheet, stamps, layout); err != nil {
		return fmt.Errorf("sheetpdf: render: %w", err)
	}
	return nil
}

func render(w io.Writer, sheet protocol.SheetSerial, stamps []Stamp, l Layout) error {
	if err := l.check(); err != nil {
		return err
	}
	if len(stamps) == 0 {
		return errors.New("no stamps")
	}
	var taken [protocol.LabelsPerSheet + 1]bool
	syms := make([]image.Image, len(stamps))
	for i, s := range stamps {
		serial := protocol.LabelSerial{Sheet: sheet, Position: s.Position}
		if !serial.Valid() {
			return fmt.Errorf("stamp %d: position %d is not 1 to %d", i, s.Position, protocol.LabelsPerSheet)
		}
		if taken[s.Position] {
			return fmt.Errorf("label %s: two stamps on one position", serial)
		}
		taken[s.Position] = true
		if len(s.Matrix) == 0 {
			return fmt.Errorf("label %s: empty matrix", serial)
		}
		sym, err := label.Symbol(s.Matrix)
		if err != nil {
			return fmt.Errorf("label %s: %w", serial, err)
		}
		// The text needs room too: the symbol may take at most half the width.
		side := float64(sym.Bounds().Dx()+2*label.QuietZone) * l.Module
		if side > l.LabelHeight-2*padding || side > l.LabelWidth/2 {
			return fmt.Errorf("label %s: a %.1f mm symbol does not fit a %.1f × %.1f mm label", serial, side, l.LabelWidth, l.LabelHeight)
		}
		syms[i] = sym
	}

	pdf := fpdf.NewCustom(&fpdf.InitType{UnitStr: "mm", Size: fpdf.SizeType{Wd: l.PageWidth, Ht: l.PageHeight}})
	pdf.SetMargins(0, 0, 0)
	pdf.SetAutoPageBreak(false, 0)
	pdf.SetCatalogSort(true)
	pdf.SetCreationDate(created)
	pdf.SetModificationDate(created)
	pdf.SetTitle("Frank postage sheet "+sheet.String(), false)
	pdf.SetProducer("Frank postage hub", false)
	pdf.SetCreator("Frank postage hub", false)
	pdf.AddPage()
	// Core fonts speak cp1252, callers speak UTF-8.
	tr := pdf.UnicodeTranslatorFromDescriptor("")
	pdf.SetFillColor(0, 0, 0)
	pdf.SetTextColor(0, 0, 0)

	// The header names the sheet so the customer feeds the right one; the
	// footer warns that fitting the page to the paper moves every stamp off
	// its label. A margin too narrow for them goes without.
	bottom := l.PageHeight - l.Top - float64(l.Rows)*l.LabelHeight - float64(l.Rows-1)*l.RowGap
	pdf.SetFont("Helvetica", "", headerPt)
	if h := headerPt * ptMM; l.Top >= 2*h {
		pdf.Text(l.Left, l.Top/2+h/3, tr("Frank postage · sheet "+sheet.String()))
	}
	if h := headerPt * ptMM; bottom >= 2*h {
		pdf.Text(l.Left, l.PageHeight-bottom/2+h/3, tr("Sheet "+sheet.String()+" · print at actual size (100%), do not fit to page"))
	}

	for i, s := range stamps {
		serial := protocol.LabelSerial{Sheet: sheet, Position: s.Position}
		if err := drawStamp(pdf, tr, l, serial, s.Lines, syms[i]); err != nil {
			return fmt.Errorf("label %s: %w", serial, err)
		}
	}
	return pdf.Output(w)
}

func (l Layout) check() error {
	switch {
	case l.Columns < 1 || l.Rows < 1 || l.Columns*l.Rows != protocol.LabelsPerSheet:
		return fmt.Errorf("layout: %d × %d cells, want %d labels", l.Columns, l.Rows, protocol.LabelsPerSheet)
	case l.PageWidth <= 0 || l.PageHeight <= 0 || l.LabelWidth <= 0 || l.LabelHeight <= 0 || l.Module <= 0:
		return errors.New("layout: page, label and module sizes must be positive")
	case l.Top < 0 || l.Left < 0 || l.ColumnGap < 0 || l.RowGap < 0:
		return errors.New("layout: margins and gaps must not be negative")
	}
	w := l.Left + float64(l.Columns)*l.LabelWidth + float64(l.Columns-1)*l.ColumnGap
	h := l.Top + float64(l.Rows)*l.LabelHeight + float64(l.Rows-1)*l.RowGap
	if w > l.PageWidth || h > l.PageHeight {
		return fmt.Errorf("layout: labels need %.1f × %.1f mm, page is %.1f × %.1f mm", w, h, l.PageWidth, l.PageHeight)
	}
	return nil
}

// cell returns the top-left corner of a label position.
func (l Layout) cell(position uint8) (x, y float64) {
	i := int(position) - 1
	col, row := i%l.Columns, i/l.Columns
	return l.Left + float64(col)*(l.LabelWidth+l.ColumnGap), l.Top + float64(row)*(l.LabelHeight+l.RowGap)
}

func drawStamp(pdf *fpdf.Fpdf, tr func(string) string, l Layout, serial protocol.LabelSerial, lines []string, sym image.Image) error {
	x0, y0 := l.cell(serial.Position)
	side := float64(sym.Bounds().Dx()+2*label.QuietZone) * l.Module
	symX, symY := x0+padding, y0+(l.LabelHeight-side)/2
	drawSymbol(pdf, sym, symX+label.QuietZone*l.Module, symY+label.QuietZone*l.Module, l.Module)

	textX := symX + side + textGap
	room := x0 + l.LabelWidth - padding - textX
	type line struct {
		text  string
		style string
		pt    float64
	}
	var ls []line
	for i, t := range lines {
		if i == 0 {
			ls = append(ls, line{tr(t), "B", firstPt})
		} else {
			ls = append(ls, line{tr(t), "", bodyPt})
		}
	}
	ls = append(ls, line{serial.String(), "", bodyPt})
	height := 0.0
	for i := range ls {
		// A long line shrinks rather than running off the label.
		pdf.SetFont("Helvetica", ls[i].style, ls[i].pt)
		if w := pdf.GetStringWidth(ls[i].text); w > room {
			ls[i].pt *= room / w
		}
		if ls[i].pt < minPt {
			return fmt.Errorf("line %q is too long for the label", ls[i].text)
		}
		height += ls[i].pt * ptMM * leading
	}
	if height > l.LabelHeight-2*padding {
		return fmt.Errorf("%d lines do not fit the label", len(ls))
	}
	y := y0 + (l.LabelHeight-height)/2
	for _, t := range ls {
		em := t.pt * ptMM
		pdf.SetFont("Helvetica", t.style, t.pt)
		// Helvetica's ascent is about 0.8 em; the leading splits above and below.
		pdf.Text(textX, y+em*((leading-1)/2+0.8), t.text)
		y += em * leading
	}
	return pdf.Error()
}

// drawSymbol fills each row's runs of dark modules as rectangles of one
// path. One fill of the union leaves no hairline seams between modules when
// a viewer or printer driver anti-aliases, which separate rectangles do.
func drawSymbol(pdf *fpdf.Fpdf, sym image.Image, x0, y0, module float64) {
	b := sym.Bounds()
	dark := func(x, y int) bool {
		r, _, _, _ := sym.At(x, y).RGBA()
		return r <= 0x7FFF
	}
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; {
			if !dark(x, y) {
				x++
				continue
			}
			start := x
			for x < b.Max.X && dark(x, y) {
				x++
			}
			left, right := x0+float64(start-b.Min.X)*module, x0+float64(x-b.Min.X)*module
			top, bot := y0+float64(y-b.Min.Y)*module, y0+float64(y-b.Min.Y+1)*module
			pdf.MoveTo(left, top)
			pdf.LineTo(right, top)
			pdf.LineTo(right, bot)
			pdf.LineTo(left, bot)
			pdf.ClosePath()
		}
	}
	pdf.DrawPath("F")
}
