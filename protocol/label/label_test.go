package label_test

import (
	"bytes"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/datamatrix"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/label"
	"github.com/frank-postage/frank/protocol/prototest"
)

// decode reads the symbol with gozxing. Its detector loses the symbol next
// to text, so it gets the square at the left of the label, where Render puts
// the code. (zxing-cpp reads whole labels; the end-to-end test uses it.)
func decode(t *testing.T, img *image.Paletted) []byte {
	t.Helper()
	h := img.Bounds().Dy()
	bmp, err := gozxing.NewBinaryBitmapFromImage(img.SubImage(image.Rect(0, 0, h, h)))
	if err != nil {
		t.Fatal(err)
	}
	res, err := datamatrix.NewDataMatrixReader().Decode(bmp, map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_PURE_BARCODE: true})
	if err != nil {
		t.Fatalf("gozxing: %v", err)
	}
	return []byte(res.GetText())
}

func TestRenderDecodes(t *testing.T) {
	for _, v := range prototest.Indicia {
		t.Run(v.Name, func(t *testing.T) {
			in := v.Fields
			st := label.FromIndicium(&in, v.Bytes(), "FIRST-CLASS")
			img, err := label.Render(st, label.Size{})
			if err != nil {
				t.Fatal(err)
			}
			if b := img.Bounds(); b.Dx() != 406 || b.Dy() != 203 {
				t.Fatalf("size %v, want 406x203 (2x1 in at 203 dpi)", b)
			}
			if len(img.Palette) != 2 {
				t.Fatalf("palette has %d colors, want 1-bit", len(img.Palette))
			}
			writeArtifact(t, img)
			got := decode(t, img)
			if !bytes.Equal(got, v.Bytes()) {
				t.Fatalf("decoded %x\nwant    %x", got, v.Bytes())
			}
			if _, err := protocol.VerifyIndicium(got, &prototest.Key().PublicKey); err != nil {
				t.Fatal(err)
			}
			writeArtifact(t, img)
		})
	}
}

// Larger labels (4 in × 2 in) still decode.
func TestRenderOtherSize(t *testing.T) {
	v := prototest.Indicia[0]
	in := v.Fields
	img, err := label.Render(label.FromIndicium(&in, v.Bytes(), "FIRST-CLASS"), label.Size{Width: 812, Height: 406})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(decode(t, img), v.Bytes()) {
		t.Fatal("decoded bytes differ")
	}
}

// The worst payload, every byte above 127, still fits a 1 in label.
func TestRenderWorstCasePayload(t *testing.T) {
	m := bytes.Repeat([]byte{0xFF}, protocol.IndiciumLen)
	m[0] = 1
	img, err := label.Render(label.Stamp{Matrix: m, Amount: 780, Service: "FIRST-CLASS", Date: 20261129, OriginZIP: "94544", Meter: "FR2N50000061", Serial: "1966-F8CF-01"}, label.Size{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(decode(t, img), m) {
		t.Fatal("decoded bytes differ")
	}
}

func TestRenderRejects(t *testing.T) {
	if _, err := label.Render(label.Stamp{Matrix: []byte{1, 2, 3}}, label.Size{}); err == nil {
		t.Error("short matrix accepted")
	}
	v := prototest.Indicia[0]
	if _, err := label.Render(label.Stamp{Matrix: v.Bytes()}, label.Size{Width: 406, Height: 60}); err == nil {
		t.Error("label too small accepted")
	}
}

func writeArtifact(t *testing.T, img image.Image) {
	dir := os.Getenv("FRANK_ARTIFACTS")
	if dir == "" {
		return
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(dir, filepath.Base(t.Name())+".png")
	if err := os.WriteFile(name, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
