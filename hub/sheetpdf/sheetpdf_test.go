package sheetpdf

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/label"
	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/verify"
)

const sheet = protocol.SheetSerial(0x1966F8CF)

// testStamps puts three signed indicia on positions 1, 4 and 10: the first
// vector byte for byte, and variants of both vectors moved onto this sheet
// and signed with the vector key, so every cell carries different bytes.
func testStamps(t *testing.T) []Stamp {
	t.Helper()
	v0, v1 := prototest.Indicia[0], prototest.Indicia[1]
	if v0.Fields.Label != (protocol.LabelSerial{Sheet: sheet, Position: 1}) {
		t.Fatalf("vector %q is on label %s, want %s-01", v0.Name, v0.Fields.Label, sheet)
	}
	four := v0.Fields
	four.Label.Position = 4
	four.Postage, four.AR, four.DR = 610, 1390, 998_610
	four.RateCategory = "1200"
	ten := v1.Fields
	ten.Label = protocol.LabelSerial{Sheet: sheet, Position: 10}

	stamp := func(in *protocol.Indicium, b []byte, service string) Stamp {
		l := label.FromIndicium(in, b, service)
		return Stamp{
			Position: in.Label.Position,
			Matrix:   b,
			Lines:    []string{l.Amount.String(), l.Service, l.Date.String(), "ZIP " + l.OriginZIP, l.Meter},
		}
	}
	signed := func(in protocol.Indicium, service string) Stamp {
		if err := in.Sign(prototest.Key()); err != nil {
			t.Fatal(err)
		}
		b, err := in.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return stamp(&in, b, service)
	}
	in0, err := protocol.ParseIndicium(v0.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	first := stamp(in0, v0.Bytes(), "FIRST-CLASS")
	return []Stamp{first, signed(four, "FIRST-CLASS CARD"), signed(ten, "FIRST-CLASS INTL")}
}

// TestRenderReads prints a sheet, rasterises it as a 300-dpi printer would
// and reads each label cell with zxing-cpp: a stamp's cell must give back
// its bytes, signed for its own label, and a blank cell must stay white.
func TestRenderReads(t *testing.T) {
	pdftoppm, err := exec.LookPath("pdftoppm")
	if err != nil {
		t.Fatal("pdftoppm not found; install Debian package poppler-utils")
	}
	if _, err := exec.LookPath(verify.ZXingReader); err != nil {
		t.Fatal(verify.ErrNoZXing)
	}
	stamps := testStamps(t)
	dir := t.TempDir()
	pdfPath := filepath.Join(dir, "sheet.pdf")
	var buf bytes.Buffer
	if err := Render(&buf, sheet, stamps, Letter10); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pdfPath, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	const dpi = 300
	out, err := exec.CommandContext(t.Context(), pdftoppm, "-r", "300", "-png", "-singlefile", pdfPath, filepath.Join(dir, "page")).CombinedOutput()
	if err != nil {
		t.Fatalf("pdftoppm: %v: %s", err, out)
	}
	page := decodePNG(t, filepath.Join(dir, "page.png"))
	if got, want := page.Bounds().Dx(), int(8.5*dpi); got != want {
		t.Fatalf("page is %d px wide at %d dpi, want %d (US Letter)", got, dpi, want)
	}

	byPos := map[uint8]Stamp{}
	for _, s := range stamps {
		byPos[s.Position] = s
	}
	px := func(mm float64) int { return int(mm / inch * dpi) }
	key := &prototest.Key().PublicKey
	for p := uint8(1); p <= protocol.LabelsPerSheet; p++ {
		x, y := Letter10.cell(p)
		r := image.Rect(px(x), px(y), px(x+Letter10.LabelWidth), px(y+Letter10.LabelHeight))
		cell := page.(interface {
			SubImage(image.Rectangle) image.Image
		}).SubImage(r)
		s, ok := byPos[p]
		if !ok {
			if n := darkPixels(cell); n != 0 {
				t.Errorf("position %d has no stamp but %d dark pixels", p, n)
			}
			continue
		}
		crop := filepath.Join(dir, "cell.png")
		encodePNG(t, crop, cell)
		got, err := verify.ReadZXing(context.Background(), crop)
		if err != nil {
			t.Errorf("position %d: %v", p, err)
			continue
		}
		if !bytes.Equal(got, s.Matrix) {
			t.Errorf("position %d reads\n%x\nwant\n%x", p, got, s.Matrix)
			continue
		}
		in, err := protocol.VerifyIndicium(got, key)
		if err != nil {
			t.Errorf("position %d: %v", p, err)
		} else if want := (protocol.LabelSerial{Sheet: sheet, Position: p}); in.Label != want {
			t.Errorf("position %d carries the indicium of label %s", p, in.Label)
		}
	}
}

// TestRenderDeterministic: the same sheet gives the same bytes, so a
// reprint is byte for byte what the customer printed first.
func TestRenderDeterministic(t *testing.T) {
	stamps := testStamps(t)
	var a, b bytes.Buffer
	if err := Render(&a, sheet, stamps, Letter10); err != nil {
		t.Fatal(err)
	}
	if err := Render(&b, sheet, stamps, Letter10); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two renders of one sheet differ")
	}
	if !bytes.Contains(a.Bytes(), []byte("Frank postage sheet 1966-F8CF")) {
		t.Error("PDF title does not name the sheet")
	}
}

func TestRenderRejects(t *testing.T) {
	m := prototest.Indicia[0].Bytes()
	ok := Stamp{Position: 1, Matrix: m, Lines: []string{"$0.78"}}
	at := func(p uint8) Stamp { return Stamp{Position: p, Matrix: m} }
	layout := func(change func(*Layout)) Layout {
		l := Letter10
		change(&l)
		return l
	}
	tests := []struct {
		name   string
		stamps []Stamp
		layout Layout
		want   string
	}{
		{"no stamps", nil, Letter10, "no stamps"},
		{"position 0", []Stamp{at(0)}, Letter10, "position 0 is not 1 to 10"},
		{"position 11", []Stamp{ok, at(11)}, Letter10, "position 11 is not 1 to 10"},
		{"same position twice", []Stamp{at(4), ok, at(4)}, Letter10, "label 1966-F8CF-04: two stamps on one position"},
		{"empty matrix", []Stamp{{Position: 3}}, Letter10, "label 1966-F8CF-03: empty matrix"},
		{"GS1 payload", []Stamp{{Position: 2, Matrix: []byte{0xE8, 1}}}, Letter10, "read as GS1"},
		{"too many lines", []Stamp{{Position: 5, Matrix: m, Lines: make([]string, 12)}}, Letter10, "13 lines do not fit"},
		{"line too long", []Stamp{{Position: 5, Matrix: m, Lines: []string{"x", strings.Repeat("FIRST-CLASS ", 20)}}}, Letter10, "too long for the label"},
		{"nine cells", []Stamp{ok}, layout(func(l *Layout) { l.Rows = 3; l.Columns = 3 }), "3 × 3 cells, want 10 labels"},
		{"labels wider than the page", []Stamp{ok}, layout(func(l *Layout) { l.ColumnGap = 10 }), "labels need"},
		{"labels taller than the page", []Stamp{ok}, layout(func(l *Layout) { l.PageHeight = 200 }), "labels need"},
		{"negative margin", []Stamp{ok}, layout(func(l *Layout) { l.Left = -1 }), "must not be negative"},
		{"no module size", []Stamp{ok}, layout(func(l *Layout) { l.Module = 0 }), "must be positive"},
		{"module too large", []Stamp{ok}, layout(func(l *Layout) { l.Module = 1.5 }), "does not fit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := Render(&buf, sheet, tt.stamps, tt.layout)
			if err == nil {
				t.Fatalf("rendered %d bytes, want an error containing %q", buf.Len(), tt.want)
			}
			if !strings.HasPrefix(err.Error(), "sheetpdf: render: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want sheetpdf: render: …%s…", err, tt.want)
			}
		})
	}
}

func decodePNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return img
}

func encodePNG(t *testing.T, path string, img image.Image) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func darkPixels(img image.Image) int {
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if r, g, bl, _ := img.At(x, y).RGBA(); r+g+bl < 3*0xC000 {
				n++
			}
		}
	}
	return n
}
