package escpos_test

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"testing"

	"github.com/frank-postage/frank/appliance/escpos"
)

func TestRasterBands(t *testing.T) {
	img := image.NewGray(image.Rect(0, 0, 10, 130))
	for y := range 130 {
		for x := range 10 {
			img.SetGray(x, y, color.Gray{255})
		}
	}
	img.SetGray(0, 0, color.Gray{0}) // top-left dot
	img.SetGray(9, 129, color.Gray{0})
	out, err := escpos.Raster(img)
	if err != nil {
		t.Fatal(err)
	}
	// 130 rows: bands of 64, 64, 2; each row 2 bytes.
	want := []byte{0x1D, 'v', '0', 0, 2, 0, 64, 0}
	if !bytes.HasPrefix(out, want) {
		t.Fatalf("first band header % x", out[:8])
	}
	if out[8] != 0x80 || out[9] != 0 {
		t.Fatalf("first row % x, want 80 00", out[8:10])
	}
	if n := 3*8 + 130*2; len(out) != n {
		t.Fatalf("%d bytes, want %d", len(out), n)
	}
	last := out[len(out)-2:]
	if last[0] != 0 || last[1] != 0x40 {
		t.Fatalf("last row % x, want 00 40 (dot 9 = bit 1 of byte 1)", last)
	}
}

func TestStatus(t *testing.T) {
	s, err := escpos.ParseStatus(0x12, 0x12, 0x12, 0x12)
	if err != nil || !s.OK() || s.Fault() != "" {
		t.Fatalf("idle printer: %+v %v", s, err)
	}
	cases := []struct {
		bytes [4]byte
		fault string
	}{
		{[4]byte{0x1A, 0x16, 0x12, 0x12}, "cover_open"},
		{[4]byte{0x1A, 0x32, 0x12, 0x72}, "paper_out"},
		{[4]byte{0x1A, 0x52, 0x1A, 0x12}, "jam"},
		{[4]byte{0x1A, 0x52, 0x32, 0x12}, "printer_error"},
	}
	for _, c := range cases {
		s, err := escpos.ParseStatus(c.bytes[0], c.bytes[1], c.bytes[2], c.bytes[3])
		if err != nil || s.Fault() != c.fault {
			t.Errorf("% x: fault %q, %v; want %q", c.bytes, s.Fault(), err, c.fault)
		}
	}
	near, _ := escpos.ParseStatus(0x12, 0x12, 0x12, 0x1E)
	if !near.PaperNearEnd || !near.OK() {
		t.Errorf("near end: %+v", near)
	}
	if _, err := escpos.ParseStatus(0xFF, 0x12, 0x12, 0x12); !errors.Is(err, escpos.ErrStatusByte) {
		t.Errorf("garbage accepted: %v", err)
	}
}
