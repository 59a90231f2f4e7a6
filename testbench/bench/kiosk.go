package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/frank-postage/frank/testbench/demo"
)

// KioskFigures are the kiosk firmware's footprint.
type KioskFigures struct {
	Sizes   map[string]int64 // cross-built binary sizes by target
	Sales   int              // sales made before reading memory
	RSSKiB  int64            // resident set after them
	PeakKiB int64            // high-water mark
}

// Kiosk measures the kiosk: the sizes of the cross-built binaries under
// binDir/linux-*/kiosk, and the memory of the host-built kiosk in a demo
// system after n sales on its simulated devices.
func Kiosk(ctx context.Context, binDir string, n int) (*KioskFigures, error) {
	f := &KioskFigures{Sizes: map[string]int64{}, Sales: n}
	for _, target := range []string{"linux-arm64", "linux-armv7"} {
		if st, err := os.Stat(filepath.Join(binDir, target, "kiosk")); err == nil {
			f.Sizes[target] = st.Size()
		}
	}
	dir, err := os.MkdirTemp("", "frank-bench-kiosk")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	d, err := demo.Start(ctx, demo.Config{BinDir: binDir, Dir: dir, Sheets: (n+9)/10 + 1})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	for i := range n {
		status, body, err := d.Sell(ctx, map[string]any{"rate_class": "1100", "weight_mg": 20_000,
			"payment": map[string]string{"method": "terminal"}})
		if err != nil || status != http.StatusOK {
			return nil, fmt.Errorf("bench: kiosk sale %d: %d %s %v", i, status, body, err)
		}
	}
	if f.RSSKiB, f.PeakKiB, err = procMemory(d.KioskPID()); err != nil {
		return nil, err
	}
	return f, nil
}

// procMemory reads VmRSS and VmHWM from /proc.
func procMemory(pid int) (rss, peak int64, err error) {
	fh, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("bench: kiosk memory: %w", err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			peak = n
		}
	}
	return rss, peak, sc.Err()
}
