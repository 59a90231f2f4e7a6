package printersim_test

import (
	"errors"
	"image"
	"image/png"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/escpos"
	"github.com/frank-postage/frank/appliance/printer"
	"github.com/frank-postage/frank/appliance/serialport"
	"github.com/frank-postage/frank/protocol/label"
	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/printersim"
)

// openPrinter starts an emulator and opens it as the kiosk does, over the
// serial port at 115200; both close with the test.
func openPrinter(t *testing.T) (*printersim.Printer, *printer.Printer) {
	t.Helper()
	dir := t.TempDir()
	sim, err := printersim.Start(filepath.Join(dir, "dev", "printer"), filepath.Join(dir, "labels"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	port, err := serialport.Open(serialport.Config{Path: sim.Path(), Baud: 115200})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { port.Close() })
	return sim, printer.New(port, time.Second)
}

func TestPrintOverPTY(t *testing.T) {
	sim, pr := openPrinter(t)
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

// Every fault the emulator can be put in reaches the driver as that fault,
// and no label comes out.
func TestFaults(t *testing.T) {
	dir := t.TempDir()
	sim, err := printersim.Start(filepath.Join(dir, "printer"), filepath.Join(dir, "labels"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	port, err := serialport.Open(serialport.Config{Path: sim.Path()})
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	pr := printer.New(port, 2*time.Second) // a whole label under -race can take 100 ms
	v := prototest.Indicia[0]
	in := v.Fields
	img, _ := label.Render(label.FromIndicium(&in, v.Bytes(), "FIRST-CLASS"), label.Size{})
	for f, want := range map[printersim.Fault]string{printersim.Jam: "jam", printersim.PaperOut: "paper_out", printersim.CoverOpen: "cover_open"} {
		sim.SetFault(f)
		var fe *printer.FaultError
		if err := pr.Print(img); !errors.As(err, &fe) || fe.Fault() != want {
			t.Errorf("fault %v: %v, want %s", f, err, want)
		}
		sim.SetFault(printersim.OK)
	}
	sim.SetFault(printersim.Silent)
	if err := pr.Print(img); !errors.Is(err, printer.ErrSilent) {
		t.Errorf("silent printer: %v", err)
	}
	// A jam in the middle of a label: the label is lost, the status says jam.
	sim.SetFault(printersim.OK)
	sim.FailNext(printersim.Jam)
	var fe *printer.FaultError
	if err := pr.Print(img); !errors.As(err, &fe) || fe.Fault() != "jam" {
		t.Fatalf("jam mid-label: %v", err)
	}
	if n := len(sim.Labels()); n != 0 {
		t.Fatalf("%d labels came out of a jammed printer", n)
	}
	sim.SetFault(printersim.OK)
	if err := pr.Print(img); err != nil || len(sim.Labels()) != 1 {
		t.Fatalf("after clearing the jam: %v, %d labels", err, len(sim.Labels()))
	}
}

// A receipt in text mode comes out on the receipt roll: its text reads
// back through the emulator's own decoder, Spanish letters included, it
// is drawn, and no label is counted for it.
func TestReceiptInTextMode(t *testing.T) {
	sim, pr := openPrinter(t)
	job, err := escpos.NewText().Center(true).Large(true).Bold(true).Line("RECIBO").Large(false).Bold(false).Center(false).
		Pair("Sello", "$0.78").Line("Tarjeta terminada en 4242 · aprobación").Bytes()
	if err != nil {
		t.Fatal(err)
	}
	next := sim.NextReceipt()
	if err := pr.PrintReceipt(job); err != nil {
		t.Fatal(err)
	}
	var path string
	select {
	case path = <-next:
	case <-time.After(10 * time.Second):
		t.Fatal("no receipt came out")
	}
	text, err := os.ReadFile(strings.TrimSuffix(path, ".png") + ".txt")
	if err != nil {
		t.Fatal(err)
	}
	want := "RECIBO\nSello" + strings.Repeat(" ", escpos.Columns-10) + "$0.78\nTarjeta terminada en 4242 · aprobación\n\n\n\n"
	if string(text) != want {
		t.Fatalf("receipt text %q, want %q", text, want)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	dark := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if r, _, _, _ := img.At(x, y).RGBA(); r < 0x8000 {
				dark++
			}
		}
	}
	if dark < 500 {
		t.Fatalf("receipt image has %d dark dots: nothing drawn", dark)
	}
	if n := len(sim.Labels()); n != 0 {
		t.Fatalf("%d labels counted for a receipt", n)
	}
	if _, err := escpos.NewText().Line("snowman ☃").Bytes(); err == nil {
		t.Fatal("a character outside code page 858 was accepted")
	}
}
