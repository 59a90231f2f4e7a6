package scanner

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func split(in string) (codes []string, errs []error) {
	var sp Splitter
	for i := 0; i < len(in); i++ {
		if code, ok, err := sp.Feed(in[i]); ok {
			if err != nil {
				errs = append(errs, err)
			} else {
				codes = append(codes, code)
			}
		}
	}
	return codes, errs
}

func TestSplitter(t *testing.T) {
	long := strings.Repeat("A", MaxLine+1)
	tests := []struct {
		name  string
		in    string
		codes []string
		errs  []error
	}{
		{"cr", "1966-F8CF\r", []string{"1966-F8CF"}, nil},
		{"lf", "1966-F8CF\n", []string{"1966-F8CF"}, nil},
		{"crlf", "1966-F8CF\r\nSTAFF-0042\r\n", []string{"1966-F8CF", "STAFF-0042"}, nil},
		{"empty lines", "\r\n\r\r\n\n  \r", nil, nil},
		{"unterminated", "1966-F8CF", nil, nil},
		{"max", strings.Repeat("A", MaxLine) + "\r", []string{strings.Repeat("A", MaxLine)}, nil},
		{"overlong", long + "\r\nok\r", []string{"ok"}, []error{ErrTooLong}},
		{"garbled", "\x00\xff\x1b~\r\nok\n", []string{"ok"}, []error{ErrGarbled}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			codes, errs := split(tt.in)
			if strings.Join(codes, "|") != strings.Join(tt.codes, "|") {
				t.Errorf("codes %q, want %q", codes, tt.codes)
			}
			if len(errs) != len(tt.errs) {
				t.Fatalf("errs %v, want %v", errs, tt.errs)
			}
			for i := range errs {
				if !errors.Is(errs[i], tt.errs[i]) {
					t.Errorf("err %v, want %v", errs[i], tt.errs[i])
				}
			}
		})
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		in   string
		kind Kind
		norm string
	}{
		{"1966-F8CF", LabelSerial, "1966-F8CF"},
		{"1966-f8cf", LabelSerial, "1966-F8CF"},
		{"1966F8CF", Unknown, "1966F8CF"},
		{"1966-F8CG", Unknown, "1966-F8CG"},
		{"1966-F8CF0", Unknown, "1966-F8CF0"},
		{"STAFF-0042", StaffBadge, "STAFF-0042"},
		{"staff-ab12", StaffBadge, "STAFF-AB12"},
		{"STAFF-ABC", Unknown, "STAFF-ABC"},
		{"STAFF-" + strings.Repeat("A", 16), StaffBadge, "STAFF-" + strings.Repeat("A", 16)},
		{"STAFF-" + strings.Repeat("A", 17), Unknown, "STAFF-" + strings.Repeat("A", 17)},
		{"STAFF-AB_12", Unknown, "STAFF-AB_12"},
		{"ſTAFF-1234", Unknown, "ſTAFF-1234"},
		{"", Unknown, ""},
	}
	for _, tt := range tests {
		k, n := Classify(tt.in)
		if k != tt.kind || n != tt.norm {
			t.Errorf("Classify(%q) = %v %q, want %v %q", tt.in, k, n, tt.kind, tt.norm)
		}
	}
}

type chunkReader struct {
	chunks []string
	err    error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, r.err
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	if r.chunks[0] == "" {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

func TestScansReaderFails(t *testing.T) {
	// A CRLF split across reads must not make an extra scan.
	r := &chunkReader{chunks: []string{"1966-", "F8CF\r", "\nSTAFF-0042\r"}, err: io.ErrUnexpectedEOF}
	var got []Scan
	for sc := range New(r).Scans(context.Background()) {
		got = append(got, sc)
	}
	if len(got) != 3 || got[0].Code != "1966-F8CF" || got[1].Code != "STAFF-0042" || !errors.Is(got[2].Err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %+v", got)
	}
}

func TestScansContextEnds(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithCancel(context.Background())
	ch := New(pr).Scans(ctx)
	go pw.Write([]byte("1966-F8CF\r1966-F8CE\r"))
	if sc := <-ch; sc.Code != "1966-F8CF" {
		t.Fatalf("got %+v", sc)
	}
	cancel()
	// The second scan may or may not get through the race with cancel,
	// but the channel must close.
	timeout := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("channel not closed after cancel")
		}
	}
}

func FuzzSplitClassify(f *testing.F) {
	for _, s := range []string{"1966-F8CF\r", "STAFF-0042\r\n", "\n\n", strings.Repeat("x", 300) + "\rok\n", "\x00\xff\r"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var sp Splitter
		for _, b := range in {
			code, ok, err := sp.Feed(b)
			if !ok {
				if code != "" || err != nil {
					t.Fatalf("not ok but code %q err %v", code, err)
				}
				continue
			}
			if err != nil {
				if code != "" {
					t.Fatalf("code %q with err %v", code, err)
				}
				continue
			}
			if code == "" || len(code) > MaxLine || strings.ContainsAny(code, "\r\n") {
				t.Fatalf("bad code %q", code)
			}
			for i := 0; i < len(code); i++ {
				if c := code[i]; c > 0x7e || c < 0x20 && c != '\t' {
					t.Fatalf("code %q has byte %#x", code, c)
				}
			}
			k, n := Classify(code)
			if k2, n2 := Classify(n); k2 != k || n2 != n {
				t.Fatalf("Classify not idempotent on %q", code)
			}
			if k != Unknown && (n != strings.ToUpper(n) || !strings.EqualFold(n, code)) {
				t.Fatalf("Classify(%q) normalized to %q", code, n)
			}
		}
	})
}
