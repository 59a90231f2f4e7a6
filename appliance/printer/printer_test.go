package printer_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/printer"
)

// tracePort replays a trace: writes must match, reads get the replies.
type tracePort struct {
	t     *testing.T
	steps []step
}

type step struct {
	write bool
	data  []byte
}

func (p *tracePort) Write(b []byte) (int, error) {
	if len(p.steps) == 0 || !p.steps[0].write {
		p.t.Fatalf("unexpected write %x", b)
	}
	want := p.steps[0].data
	if !bytes.HasPrefix(want, b) {
		p.t.Fatalf("wrote %x, trace says %x", b, want)
	}
	if len(b) == len(want) {
		p.steps = p.steps[1:]
	} else {
		p.steps[0].data = want[len(b):]
	}
	return len(b), nil
}

func (p *tracePort) Read(b []byte) (int, error) {
	if len(p.steps) == 0 || p.steps[0].write {
		return 0, nil // silence: the timeout passed
	}
	n := copy(b, p.steps[0].data)
	p.steps[0].data = p.steps[0].data[n:]
	if len(p.steps[0].data) == 0 {
		p.steps = p.steps[1:]
	}
	return n, nil
}

func (p *tracePort) SetReadTimeout(time.Duration) error { return nil }
func (p *tracePort) ResetInputBuffer() error            { return nil }

func load(t *testing.T, path string) []step {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []step
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		b, err := hex.DecodeString(strings.TrimSpace(line[1:]))
		if err != nil {
			t.Fatalf("%s: %q: %v", path, line, err)
		}
		out = append(out, step{write: line[0] == '>', data: b})
	}
	return out
}

// Each trace gives the outcome its name promises, with exactly its bytes.
func TestTraces(t *testing.T) {
	label := image.NewGray(image.Rect(0, 0, 8, 2))
	for x := range 8 {
		label.SetGray(x, 0, color.Gray{})
		label.SetGray(x, 1, color.Gray{Y: 255})
	}
	want := map[string]string{"ok": "", "paper-out-before": "paper_out", "jam-after": "jam", "cover-open-before": "cover_open", "silent": "silent"}
	files, _ := filepath.Glob("testdata/*.trace")
	if len(files) != len(want) {
		t.Fatalf("%d traces, %d expectations", len(files), len(want))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".trace")
		t.Run(name, func(t *testing.T) {
			port := &tracePort{t: t, steps: load(t, f)}
			err := printer.New(port, 0).Print(label)
			var fe *printer.FaultError
			got := ""
			switch {
			case errors.Is(err, printer.ErrSilent):
				got = "silent"
			case errors.As(err, &fe):
				got = fe.Fault()
			case err != nil:
				t.Fatal(err)
			}
			if got != want[name] {
				t.Fatalf("outcome %q, trace promises %q", got, want[name])
			}
			if len(port.steps) != 0 {
				t.Fatalf("trace not used up: %d steps left", len(port.steps))
			}
		})
	}
}
