package protocol

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// duplicateKeyTokens is duplicateKey as it was, on encoding/json's token
// reader: the reference the byte scanner must agree with.
func duplicateKeyTokens(b []byte) (string, bool) {
	type object struct {
		keys      map[string]bool
		expectKey bool
	}
	d := json.NewDecoder(bytes.NewReader(b))
	var stack []*object
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1] != nil {
			stack[n-1].expectKey = true
		}
	}
	for {
		tok, err := d.Token()
		if err != nil {
			return "", false
		}
		top := (*object)(nil)
		if n := len(stack); n > 0 {
			top = stack[n-1]
		}
		if key, ok := tok.(string); ok && top != nil && top.expectKey {
			folded := strings.ToLower(key)
			if top.keys[folded] || !isASCII(key) {
				return key, true
			}
			top.keys[folded], top.expectKey = true, false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &object{keys: map[string]bool{}, expectKey: true})
		case json.Delim('['):
			stack = append(stack, nil)
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			valueDone()
		}
	}
}

// purchase is a kiosk's purchase request (prototest's, which imports this
// package).
const purchase = `{"request_id":"r-0001","kiosk_id":"kiosk-1","origin_zip":"94544",` +
	`"rate_table":"usps-2025-07-13","items":[{"rate_class":"1100","weight_mg":20000,` +
	`"amount_mills":780,"label_serial":"1966-F8CF-01"}],` +
	`"payment":{"method":"card_token","token":"tok_approve","brand":"visa","last4":"4242"}}`

var dupKeyCases = []string{
	purchase,
	`{"a":1,"A":2}`,
	`{"a":{"b":1},"b":{"a":1,"c":[{"a":1},{"a":2}]}}`,
	`{"a":[{"x":1,"x":2}]}`,
	`{"k\u0069osk_id":"x","kiosk_id":"y"}`,
	`{"a\"b":1,"a\"B":2}`,
	`{"a\\":1,"b":"\\","a\\\\":2}`,
	`{"é":1}`,
	`{"\u00e9":1}`,
	`{"a":"{\"a\":1,\"a\":2}"}`,
	`[{"a":1},{"a":1}]`,
	`{"":1,"":2}`,
	`{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k17":17,"K3":3}`,
	`{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k17":17,"k18":18}`,
}

// The byte scanner finds the duplicate the token reader found, on every
// document that is valid JSON.
func TestDuplicateKeyAgrees(t *testing.T) {
	for _, c := range dupKeyCases {
		k1, d1 := duplicateKey([]byte(c))
		k2, d2 := duplicateKeyTokens([]byte(c))
		if k1 != k2 || d1 != d2 {
			t.Errorf("%s: scanner %q %v, token reader %q %v", c, k1, d1, k2, d2)
		}
	}
}

func FuzzDuplicateKey(f *testing.F) {
	for _, c := range dupKeyCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		k1, d1 := duplicateKey(b) // must not panic on any input
		if !json.Valid(b) {
			return
		}
		if k2, d2 := duplicateKeyTokens(b); k1 != k2 || d1 != d2 {
			t.Fatalf("%q: scanner %q %v, token reader %q %v", b, k1, d1, k2, d2)
		}
	})
}

// The kiosk's purchase request, decoded as the hub decodes it, beside the
// duplicate-key check alone, the old one and the new.
func BenchmarkDecodePurchaseRequest(b *testing.B) {
	msg := []byte(purchase)
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodePurchaseRequest(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("duplicates/scanner", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			duplicateKey(msg)
		}
	})
	b.Run("duplicates/tokens", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			duplicateKeyTokens(msg)
		}
	})
}
