package printersim_test

import (
	"image/png"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/escpos"
	"github.com/frank-postage/frank/appliance/printer"
	"github.com/frank-postage/frank/appliance/serialport"
	"github.com/frank-postage/frank/protocol/label"
	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/printersim"
)

// A kiosk killed while writing a label leaves the printer, which kept its
// power, waiting for the rest of the image: without a resync it took the
// next kiosk's status queries as image data and never answered, and the
// kiosk stayed out of service until someone power-cycled the printer.
// Wherever the job was cut, the restarted kiosk's printer answers, and
// its labels come out whole, none of the old image in them.
func TestRestartAfterKillMidLabelPrintsClean(t *testing.T) {
	v := prototest.Indicia[0]
	in := v.Fields
	img, err := label.Render(label.FromIndicium(&in, v.Bytes(), "FIRST-CLASS"), label.Size{})
	if err != nil {
		t.Fatal(err)
	}
	raster, err := escpos.Raster(img)
	if err != nil {
		t.Fatal(err)
	}
	job := append(escpos.Init(), raster...)
	band := 8 + (img.Bounds().Dx()+7)/8*escpos.BandRows // one GS v 0 band, header and data
	for name, cut := range map[string]int{
		"mid image":           len(job) / 2,
		"inside a header":     2 + band + 5, // the second band's size half sent
		"inside the first yL": 2 + 6,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			sim, err := printersim.Start(filepath.Join(dir, "dev", "printer"), filepath.Join(dir, "labels"), slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sim.Close() })
			// The kiosk before the kill: part of the job written.
			port, err := serialport.Open(serialport.Config{Path: sim.Path(), Baud: 115200})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := port.Write(job[:cut]); err != nil {
				t.Fatal(err)
			}
			port.Close()
			// The kiosk after the restart.
			port, err = serialport.Open(serialport.Config{Path: sim.Path(), Baud: 115200})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { port.Close() })
			pr := printer.Open(port, 2*time.Second)
			if st, err := pr.Status(); err != nil || !st.OK() {
				t.Fatalf("status after the restart: %+v, %v", st, err)
			}
			for i := range 3 {
				if err := pr.Print(img); err != nil {
					t.Fatalf("print %d after the restart: %v", i+1, err)
				}
			}
			labels := sim.Labels()
			if len(labels) != 3 {
				t.Fatalf("%d labels out, want 3", len(labels))
			}
			for _, path := range labels {
				f, err := os.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				got, err := png.Decode(f)
				f.Close()
				if err != nil {
					t.Fatal(err)
				}
				if got.Bounds().Dy() != img.Bounds().Dy() {
					t.Fatalf("%s: %d rows printed, %d sent", filepath.Base(path), got.Bounds().Dy(), img.Bounds().Dy())
				}
				if d := diff(got, img); d != 0 {
					t.Fatalf("%s: %d dots differ from the label sent", filepath.Base(path), d)
				}
			}
		})
	}
}
