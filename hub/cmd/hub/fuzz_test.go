package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzApplyConfig feeds the hub's config file to applyConfig. It never
// panics; a file it refuses is an error that names the file; and a file it
// takes is one JSON object and nothing after it, whose settings are set
// (but for the one given on the command line, and comments).
func FuzzApplyConfig(f *testing.F) {
	path := filepath.Join(f.TempDir(), "hub.json")
	for _, s := range []string{
		`{"#": "Frank hub", "data": "/var/lib/frank/hub", "workers": 2, "secure-cookies": true}`,
		`{"data": "x", "data": "y"}`, `{"workers": "many"}`, `{"workers": 1e99}`, `{"data": ["a"]}`, `{"data": null}`,
		`{"config": "x.json"}`, `{"dta": "x"}`, `{"#1": {"nested": [1]}}`, `{"data": "x"} trailing`, `{"data": "x"}{}`,
		`{}}`, `{"data": "x"}]`, `null`, `not json`, ``, `[]`, `"x"`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		fs := flag.NewFlagSet("hub", flag.ContinueOnError)
		fs.SetOutput(&bytes.Buffer{})
		data, workers, secure := fs.String("data", "var/hub", ""), fs.Int("workers", 0, ""), fs.Bool("secure-cookies", false, "")
		fs.String("http", "127.0.0.1:8080", "")
		if err := fs.Parse([]string{"--http", ":9"}); err != nil {
			t.Fatal(err)
		}
		err := applyConfig(fs, path)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "config "+path+": ") {
				t.Fatalf("%q: the error %q does not name the file", b, err)
			}
			return
		}
		if !json.Valid(b) || !bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("{")) {
			t.Fatalf("%q taken: not one JSON object", b)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%q taken: %v", b, err)
		}
		for k := range m {
			if !strings.HasPrefix(k, "#") && k != "data" && k != "workers" && k != "secure-cookies" && k != "http" {
				t.Fatalf("%q taken: unknown setting %q", b, k)
			}
		}
		if v, ok := m["http"]; ok && fs.Lookup("http").Value.String() != ":9" {
			t.Fatalf("%q: the file's http %v won over the command line's", b, v)
		}
		if v, ok := m["data"].(string); ok && *data != v {
			t.Fatalf("%q: data is %q, want %q", b, *data, v)
		}
		if v, ok := m["secure-cookies"].(bool); ok && *secure != v {
			t.Fatalf("%q: secure-cookies is %v, want %v", b, *secure, v)
		}
		if v, ok := m["workers"].(float64); ok && float64(*workers) != v {
			t.Fatalf("%q: workers is %d, want %v", b, *workers, v)
		}
	})
}
