package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/frank-postage/frank/hub"
)

// secretSettings are the flags a config file may not set, with the
// variable that gives each instead.
var secretSettings = map[string]string{"pkcs11-pin": "FRANK_PKCS11_PIN", "broker-password": "FRANK_BROKER_PASSWORD"}

// applyConfig sets the flags a config file names, except those given on
// the command line. The file is a JSON object of flag names (as in
// --help) and values; keys starting with "#" are comments:
//
//	{"#": "Frank hub", "data": "/var/lib/frank/hub", "http": "127.0.0.1:8080",
//	 "workers": 2, "secure-cookies": true}
//
// An unknown flag name is an error: a typo must not quietly keep a default.
// So is a secret (secretSettings): the file is installed readable by all.
func applyConfig(fs *flag.FlagSet, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if m == nil {
		return fmt.Errorf("config %s: want a JSON object", path) // the file was null
	}
	// dec.More would take a stray "}" or "]" for the end of the data.
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("config %s: trailing data after the object", path)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for k, v := range m {
		if strings.HasPrefix(k, "#") {
			continue
		}
		if k == "config" || fs.Lookup(k) == nil {
			return fmt.Errorf("config %s: unknown setting %q (see hub --help)", path, k)
		}
		if env, ok := secretSettings[k]; ok {
			return fmt.Errorf("config %s: %s is a secret, and the config file is readable by all: set %s in the environment (the image's /etc/frank/hub.env, mode 0600)", path, k, env)
		}
		if set[k] {
			continue
		}
		var s string
		switch v := v.(type) {
		case string:
			s = v
		case json.Number:
			s = v.String()
		case bool:
			s = strconv.FormatBool(v)
		default:
			return fmt.Errorf("config %s: %s: want a string, number or boolean", path, k)
		}
		if err := fs.Set(k, s); err != nil {
			return fmt.Errorf("config %s: %s: %w", path, k, err)
		}
	}
	return nil
}

// writeReady tells whoever started the hub where it listens: written to a
// temporary file and renamed, so a reader never sees half of it.
func writeReady(path string, h *hub.Hub) error {
	b, _ := json.Marshal(map[string]string{"http": h.HTTPAddr, "url": h.URL(), "plain": h.PlainAddr, "broker": h.BrokerAddr,
		"broker_tls": h.BrokerTLSAddr, "fingerprint": h.TLSFingerprint()})
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("ready file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("ready file: %w", err)
	}
	return nil
}
