package scale_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/appliance/scale"
)

// tracePort replays a trace: each Write must match the next "> " line, and
// the "< " lines after it are what Read returns, one line per Read.
type tracePort struct {
	t     *testing.T
	steps []traceStep
	reads [][]byte
}

type traceStep struct {
	send bool
	data []byte
}

func loadTrace(t *testing.T, name string) *tracePort {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := &tracePort{t: t}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(line) < 2 || (line[:2] != "> " && line[:2] != "< ") {
			t.Fatalf("%s:%d: want > or <", name, n)
		}
		s, err := strconv.Unquote(line[2:])
		if err != nil {
			t.Fatalf("%s:%d: %v", name, n, err)
		}
		p.steps = append(p.steps, traceStep{send: line[0] == '>', data: []byte(s)})
	}
	return p
}

func (p *tracePort) Write(b []byte) (int, error) {
	if len(p.steps) == 0 || !p.steps[0].send {
		p.t.Errorf("unexpected write %q", b)
		return len(b), nil
	}
	if !bytes.Equal(b, p.steps[0].data) {
		p.t.Errorf("wrote %q, trace has %q", b, p.steps[0].data)
	}
	p.steps = p.steps[1:]
	for len(p.steps) > 0 && !p.steps[0].send {
		p.reads = append(p.reads, p.steps[0].data)
		p.steps = p.steps[1:]
	}
	return len(b), nil
}

// Read returns 0, nil when the trace has nothing more, as a serial port
// does when its read timeout passes.
func (p *tracePort) Read(b []byte) (int, error) {
	if len(p.reads) == 0 {
		return 0, nil
	}
	n := copy(b, p.reads[0])
	if p.reads[0] = p.reads[0][n:]; len(p.reads[0]) == 0 {
		p.reads = p.reads[1:]
	}
	return n, nil
}

func (p *tracePort) SetReadTimeout(time.Duration) error { return nil }

func TestTraces(t *testing.T) {
	stable := func(mg int64) scale.Reading { return scale.Reading{WeightMg: mg, Stable: true} }
	tests := map[string]struct {
		want scale.Reading
		err  error
	}{
		"nci-stable-lb":     {want: stable(566990)}, // 1.25 lb = 566990.4625 mg
		"nci-stable-oz":     {want: stable(566990)}, // 20 oz
		"nci-stable-kg":     {want: stable(1250000)},
		"nci-split-reply":   {want: stable(566990)},
		"nci-three-status":  {want: stable(566990)},
		"nci-motion":        {want: scale.Reading{WeightMg: 576062}}, // 1.27 lb = 576062.3099 mg
		"nci-at-zero":       {want: scale.Reading{Stable: true, AtZero: true}},
		"nci-over":          {want: scale.Reading{Stable: true, OverCapacity: true}, err: scale.ErrOverCapacity},
		"nci-under":         {want: scale.Reading{Stable: true, UnderCapacity: true}, err: scale.ErrUnderCapacity},
		"nci-eeprom":        {err: scale.ErrHardware},
		"nci-silent":        {err: scale.ErrSilent},
		"nci-unrecognized":  {err: scale.ErrProtocol},
		"nci-zero":          {},
		"nci-zero-motion":   {err: scale.ErrMotion},
		"sics-stable-g":     {want: stable(100000)},
		"sics-stable-kg":    {want: stable(567000)},
		"sics-dynamic":      {want: scale.Reading{WeightMg: 101200}},
		"sics-busy":         {err: scale.ErrMotion},
		"sics-overload":     {want: scale.Reading{OverCapacity: true}, err: scale.ErrOverCapacity},
		"sics-underload":    {want: scale.Reading{UnderCapacity: true}, err: scale.ErrUnderCapacity},
		"sics-syntax-error": {err: scale.ErrProtocol},
		"sics-silent":       {err: scale.ErrSilent},
		"sics-zero":         {},
		"sics-zero-busy":    {err: scale.ErrMotion},
		"sics-zero-over":    {err: scale.ErrOverCapacity},
	}
	files, _ := filepath.Glob("testdata/*.trace")
	if len(files) != len(tests) {
		t.Errorf("%d traces, %d expectations", len(files), len(tests))
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".trace")
		t.Run(name, func(t *testing.T) {
			tt, ok := tests[name]
			if !ok {
				t.Fatalf("no expectation for %s", file)
			}
			p := loadTrace(t, file)
			type driver interface {
				scale.Reader
				Zero(context.Context) error
			}
			var d driver = scale.NewNCI(p, 50*time.Millisecond)
			if strings.HasPrefix(name, "sics-") {
				d = scale.NewSICS(p, 50*time.Millisecond)
			}
			ctx := context.Background()
			var got scale.Reading
			var err error
			if strings.Contains(name, "-zero") && name != "nci-at-zero" {
				err = d.Zero(ctx)
			} else {
				got, err = d.Read(ctx)
			}
			if !errors.Is(err, tt.err) || (err == nil) != (tt.err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if tt.err != scale.ErrHardware && got != tt.want {
				t.Errorf("reading = %+v, want %+v", got, tt.want)
			}
			if len(p.steps) > 0 {
				t.Errorf("trace not played to the end: %d steps left", len(p.steps))
			}
		})
	}
}
