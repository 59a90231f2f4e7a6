package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzReadConfig feeds the kiosk's config file to readConfig. It never
// panics; a file it refuses is an error that names the file; and a file it
// takes is one JSON object of known fields and nothing after it, read as
// it says.
func FuzzReadConfig(f *testing.F) {
	path := filepath.Join(f.TempDir(), "kiosk.json")
	for _, s := range []string{
		`{"id": "store12-k1", "origin_zip": "94544", "broker": "tcp://127.0.0.1:1883", "listen": "127.0.0.1:8081",
		  "printer": {"path": "/dev/frank-printer", "baud": 115200, "data_bits": 8, "parity": "none", "stop_bits": "1"},
		  "journal": "/var/lib/frank/kiosk-journal.db",
		  "devices": {"scale": {"path": "/dev/frank-scale", "baud": 9600}, "scale_protocol": "nci", "gpio": "host"},
		  "staff_pin_bcrypt": "$2y$10$x", "staff_badges": ["STAFF-0001"], "remedy_window_s": 300, "log": "json"}`,
		`{"devices": {"scale_protocol": "hx711", "hx711": {"clock": "GPIO5", "data": "GPIO6", "capacity_g": 20000}}}`,
		`{"idd": "x"}`, `{"printer": {"baud": "fast"}}`, `{"remedy_window_s": 1e99}`, `{"staff_badges": "x"}`,
		`{"id": "a"} trailing`, `{"id": "a"}{"id": "b"}`, `{"id": "a"}}`, `null`, `[]`, ``, `not json`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(path, b, 0o640); err != nil { // staff fields: not for others
			t.Fatal(err)
		}
		c, err := readConfig(path)
		if err != nil {
			if c != nil || !strings.HasPrefix(err.Error(), "config "+path+": ") {
				t.Fatalf("%q: %+v and the error %q, which does not name the file", b, c, err)
			}
			return
		}
		if !json.Valid(b) || !bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("{")) {
			t.Fatalf("%q taken: not one JSON object", b)
		}
		var want fileConfig
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&want); err != nil {
			t.Fatalf("%q taken: %v", b, err)
		}
		if !reflect.DeepEqual(*c, want) {
			t.Fatalf("%q read as %+v, want %+v", b, *c, want)
		}
	})
}
