package printersim_test

import (
	"image"
	"image/png"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/printer"
	"github.com/frank-postage/frank/appliance/serialport"
	"github.com/frank-postage/frank/protocol/label"
	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/printersim"
)

func TestPrintOverPTY(t *testing.T) {
	dir := t.TempDir()
	sim, err := printersim.Start(filepath.Join(dir, "dev", "printer"), filepath.Join(dir, "labels"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	port, err := serialport.Open(serialport.Config{Path: sim.Path(), Baud: 115200})
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	pr := printer.New(port, time.Second)
	st, err := pr.Status()
	if err != nil || !st.OK() {
		t.Fatalf("status %+v, %v", st, err)
	}
	v := prototest.Indicia[0]
	in := v.Fields
	img, err := label.Render(label.FromIndicium(&in, v.Bytes(), "FIRST-CLASS"), label.Size{})
	if err != nil {
		t.Fatal(err)
	}
	next := sim.Next()
	if err := pr.Print(img); err != nil {
		t.Fatal(err)
	}
	var path string
	select {
	case path = <-next:
	case <-time.After(10 * time.Second):
		t.Fatal("no label came out")
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	// Raster rows travel in whole bytes: 406 dots print as 408, the last two blank.
	if w, h := got.Bounds().Dx(), got.Bounds().Dy(); w != (img.Bounds().Dx()+7)/8*8 || h != img.Bounds().Dy() {
		t.Fatalf("printed %v, sent %v", got.Bounds(), img.Bounds())
	}
	if d := diff(got, img); d != 0 {
		t.Fatalf("%d dots differ between what was sent and what printed", d)
	}
}

func diff(a, b image.Image) int {
	n := 0
	r := a.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			ar, _, _, _ := a.At(x, y).RGBA()
			br, _, _, _ := b.At(x, y).RGBA()
			if (ar < 0x8000) != (br < 0x8000) {
				n++
			}
		}
	}
	return n
}
