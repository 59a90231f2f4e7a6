package protocol_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
)

// The fuzzers check that decoders never panic, and that what decodes
// re-encodes to something that decodes the same.

func FuzzParseIndicium(f *testing.F) {
	for _, v := range prototest.Indicia {
		f.Add(v.Bytes())
	}
	for _, v := range prototest.BadIndicia {
		f.Add(prototest.IndiciumVector{Hex: v.Hex}.Bytes())
	}
	pub := &prototest.Key().PublicKey
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := protocol.ParseIndicium(b)
		_, verr := protocol.VerifyIndicium(b, pub)
		if err != nil {
			if verr == nil {
				t.Fatal("verified what does not parse")
			}
			return
		}
		re, err := in.MarshalBinary()
		if err != nil || !bytes.Equal(re, b) {
			t.Fatalf("re-encode differs: %x, %v", re, err)
		}
	})
}

func FuzzDecodePurchaseRequest(f *testing.F) {
	for _, v := range prototest.PurchaseRequests {
		f.Add([]byte(v.JSON))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.DecodePurchaseRequest(b)
		if err != nil {
			if protocol.AsError(err).Code == protocol.CodeInternal {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		if r.Total() <= 0 {
			t.Fatal("valid request with no value")
		}
	})
}

func FuzzDecodePurchaseResult(f *testing.F) {
	for _, v := range prototest.PurchaseResults {
		f.Add([]byte(v.JSON))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := protocol.DecodePurchaseResult(b); err != nil && protocol.AsError(err).Code == protocol.CodeInternal {
			t.Fatalf("untyped error: %v", err)
		}
	})
}

func FuzzDecodePrintReport(f *testing.F) {
	f.Add([]byte(`{"request_id":"r-1","kiosk_id":"k","labels":[{"label_serial":"1966-F8CF-01","outcome":"printed"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := protocol.DecodePrintReport(b); err != nil && protocol.AsError(err).Code == protocol.CodeInternal {
			t.Fatalf("untyped error: %v", err)
		}
	})
}

func FuzzDecodeKioskConfig(f *testing.F) {
	f.Add([]byte(`{"kiosk_id":"k","heartbeat_s":30,"rates":{"version":"v","effective":"2025-07-13","classes":[{"class":"1100","name":"Letter","print":"FIRST-CLASS","first_ounce_mills":780,"additional_ounce_mills":290,"max_weight_mg":99223}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := protocol.DecodeKioskConfig(b)
		if err != nil {
			return
		}
		// Any accepted table prices its own classes without error.
		for _, rc := range c.Rates.Classes {
			if _, err := c.Rates.Price(rc.Class, rc.MaxWeightMg); err != nil {
				t.Fatalf("accepted table cannot price %s: %v", rc.Class, err)
			}
		}
	})
}

func FuzzDecodeTelemetry(f *testing.F) {
	f.Add([]byte(`{"kiosk_id":"k","at":"2026-11-29T10:00:00Z","firmware":"1.0","uptime_s":5,"labels_left":9,"paper":"ok","printer":"ok","scale":"ok","sales":1,"in_service":true}`))
	f.Add([]byte(`{"kiosk_id":"k","at":"2026-11-29T10:00:00Z","firmware":"dev","labels_left":0,"paper":"out","printer":"paper_out","scale":"","last_error":"hub_no_answer","sales":0,"in_service":false,"reasons":["paper_out","printer_fault","door_open"]}`))
	f.Add([]byte(`{"kiosk_id":"k","paper":"out","printer":"PPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPP","scale":"ok","reasons":["door_open"]}`))
	f.Add([]byte(`{"kiosk_id":"k","last_error":"jam\n\u001b[31m","reasons":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		tm, err := protocol.DecodeTelemetry(b)
		if err != nil {
			var pe *protocol.Error
			if !errors.As(err, &pe) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// What the hub logs and raises alerts from is bounded and plain.
		for _, f := range []struct {
			v    string
			list []string
		}{{tm.Paper, protocol.TelemetryPaper}, {tm.Printer, protocol.TelemetryPrinter}, {tm.Scale, protocol.TelemetryScale}} {
			if f.v != "" && !slices.Contains(f.list, f.v) {
				t.Fatalf("accepted state %q", f.v)
			}
		}
		for _, s := range []string{tm.Firmware, tm.LastError} {
			if len(s) > protocol.MaxTelemetryText || strings.IndexFunc(s, func(r rune) bool { return r < ' ' || r > '~' }) >= 0 {
				t.Fatalf("accepted text %q", s)
			}
		}
		if len(tm.Reasons) > protocol.MaxTelemetryReasons {
			t.Fatalf("accepted %d reasons", len(tm.Reasons))
		}
		for _, r := range tm.Reasons {
			if r == "" || len(r) > protocol.MaxReasonBytes || strings.Trim(r, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
				t.Fatalf("accepted reason %q", r)
			}
		}
	})
}

func FuzzDecodeWebStampRequest(f *testing.F) {
	f.Add([]byte(prototest.PatentWebStampRequest))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := protocol.DecodeWebStampRequest(b); err != nil {
			return
		}
		// What is accepted is refused with a field given twice: put two
		// <FIM>s right after the root's start tag.
		d := xml.NewDecoder(bytes.NewReader(b))
		for {
			tok, err := d.Token()
			if err != nil {
				t.Fatalf("accepted, yet no root: %v", err)
			}
			if _, ok := tok.(xml.StartElement); ok {
				break
			}
		}
		at := d.InputOffset()
		twice := slices.Concat(b[:at], []byte("<FIM>0</FIM><FIM>0</FIM>"), b[at:])
		if _, err := protocol.DecodeWebStampRequest(twice); protocol.AsError(err).Code != protocol.CodeInvalidRequest {
			t.Fatalf("%q: %v, want invalid_request", twice, err)
		}
	})
}

func FuzzDecodeXMLIndicium(f *testing.F) {
	f.Add([]byte(prototest.PatentIndicium))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = protocol.DecodeXMLIndicium(b)
	})
}

func FuzzParseLabelSerial(f *testing.F) {
	f.Add("1966-F8CF-03")
	f.Fuzz(func(t *testing.T, s string) {
		l, err := protocol.ParseLabelSerial(s)
		if err != nil {
			return
		}
		if l2, err := protocol.ParseLabelSerial(l.String()); err != nil || l2 != l {
			t.Fatalf("%q -> %v -> %v, %v", s, l, l2, err)
		}
	})
}

func FuzzParseMills(f *testing.F) {
	for _, s := range []string{"1000.00", "0.78", "$1,000.00", "0.001"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := protocol.ParseMills(s)
		if err != nil {
			return
		}
		if m < 0 {
			t.Fatalf("%q parsed negative: %d", s, m)
		}
		if back, err := protocol.ParseMills(m.Exact()); err != nil || back != m {
			t.Fatalf("%q -> %d -> %q -> %d, %v", s, m, m.Exact(), back, err)
		}
	})
}

func FuzzDecodeStockLoad(f *testing.F) {
	f.Add([]byte(`{"request_id":"s-1","kiosk_id":"k","sheets":["1966-F8CF","0000-0001"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := protocol.DecodeStockLoad(b); err != nil && protocol.AsError(err).Code == protocol.CodeInternal {
			t.Fatalf("untyped error: %v", err)
		}
	})
}

func FuzzDecodeStockResult(f *testing.F) {
	f.Add([]byte(`{"request_id":"s-1","status":"ok","sheets":[{"sheet":"1966-F8CF","free":[1,2,3]}]}`))
	f.Add([]byte(`{"request_id":"s-1","status":"ok","sheets":[{"sheet":"1966-F8CF","free":[0,11,-1]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.DecodeStockResult(b)
		if err != nil {
			return
		}
		// What is accepted names sheets and their labels' positions.
		for _, sh := range r.Sheets {
			if _, err := protocol.ParseSheetSerial(sh.Sheet); err != nil {
				t.Fatalf("accepted sheet %q", sh.Sheet)
			}
			for _, p := range sh.Free {
				if p < 1 || p > protocol.LabelsPerSheet {
					t.Fatalf("accepted position %d", p)
				}
			}
		}
	})
}

func FuzzDecodeRefundRequest(f *testing.F) {
	f.Add([]byte(`{"request_id":"f-1","kiosk_id":"k","label":{"request_id":"r-1","label_serial":"1966-F8CF-01"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := protocol.DecodeRefundRequest(b); err != nil && protocol.AsError(err).Code == protocol.CodeInternal {
			t.Fatalf("untyped error: %v", err)
		}
	})
}

func FuzzDecodeRefundResult(f *testing.F) {
	f.Add([]byte(`{"request_id":"f-1","status":"ok","amount_mills":780}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = protocol.DecodeRefundResult(b)
	})
}

func FuzzDecodeStaffLogin(f *testing.F) {
	f.Add([]byte(`{"request_id":"t-1","kiosk_id":"k","pin":"1357"}`))
	f.Add([]byte(`{"request_id":"t-1","kiosk_id":"k","badge":"STAFF-BOB7"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.DecodeStaffLogin(b)
		if err != nil {
			if protocol.AsError(err).Code == protocol.CodeInternal {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		// What is accepted carries one well-formed credential.
		if (r.PIN == "") == (r.Badge == "") || r.PIN != "" && !protocol.ValidStaffPIN(r.PIN) || r.Badge != "" && !protocol.ValidStaffBadge(r.Badge) {
			t.Fatalf("accepted %+v", r)
		}
	})
}

func FuzzDecodeStaffLoginResult(f *testing.F) {
	f.Add([]byte(`{"request_id":"t-1","status":"ok","name":"alice"}`))
	f.Add([]byte(`{"request_id":"t-1","status":"rejected","error":{"code":"unauthorized","message":"wrong"},"retry_after_s":60}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.DecodeStaffLoginResult(b)
		if err == nil && r.Status == protocol.ResultOK && r.Name == "" {
			t.Fatalf("ok without a name: %q", b)
		}
	})
}

func FuzzDecodeEnrollRequest(f *testing.F) {
	f.Add([]byte(`{"code":"ABCDE-FGHIJ-KLMNO-PQRST"}`))
	f.Add([]byte(`{"code":"abcde fghij klmno pqrs7"}`))
	f.Add([]byte(`{"code":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.DecodeEnrollRequest(b)
		if err == nil && protocol.NormalizeEnrollCode(r.Code) == "" {
			t.Fatalf("accepted %q", b)
		}
		if err != nil && protocol.AsError(err).Code == "" {
			t.Fatalf("untyped error %v", err)
		}
	})
}

func FuzzDecodeEnrollResult(f *testing.F) {
	f.Add([]byte(`{"kiosk_id":"k1","store":"s1","username":"k1","password":"p"}`))
	f.Add([]byte(`{"kiosk_id":"k 1","store":"s1","username":"k1","password":"p","broker":"tcp://h:1883"}`))
	f.Add([]byte(`{"kiosk_id":"k1","store":"s1","username":"k1","certificate":"-----BEGIN","ca_chain":"x","broker":"mqtts://h:8883"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.DecodeEnrollResult(b)
		if err == nil && (!protocol.ValidKioskID(r.KioskID) || r.Password == "" && (r.Certificate == "" || r.CAChain == "")) {
			t.Fatalf("accepted %q", b)
		}
	})
}

func FuzzDecodeRenewRequest(f *testing.F) {
	f.Add([]byte(`{"csr":"-----BEGIN CERTIFICATE REQUEST-----"}`))
	f.Add([]byte(`{"csr":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.DecodeRenewRequest(b)
		if err == nil && r.CSR == "" {
			t.Fatalf("accepted %q", b)
		}
		if err != nil && protocol.AsError(err).Code == "" {
			t.Fatalf("untyped error %v", err)
		}
	})
}

func FuzzDecodeRenewResult(f *testing.F) {
	f.Add([]byte(`{"certificate":"a","ca_chain":"b"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.DecodeRenewResult(b)
		if err == nil && (r.Certificate == "" || r.CAChain == "") {
			t.Fatalf("accepted %q", b)
		}
	})
}

func FuzzSplitEnrollCode(f *testing.F) {
	f.Add("ABCDE-FGHIJ-KLMNO-PQRST@" + strings.Repeat("ab", 32))
	f.Add("ABCDE@")
	f.Fuzz(func(t *testing.T, s string) {
		_, fp := protocol.SplitEnrollCode(s)
		pin, err := protocol.ParseFingerprint(fp)
		if err != nil {
			return
		}
		if _, err := hex.DecodeString(pin); err != nil || len(pin) != 64 || strings.ToLower(pin) != pin {
			t.Fatalf("%q: fingerprint %q parsed as %q", s, fp, pin)
		}
	})
}

func FuzzDecodeCommand(f *testing.F) {
	f.Add([]byte(`{"command_id":"cmd-1","kiosk_id":"kiosk-1","action":"out_of_service","message":"Back at 2 pm","issued_by":"ann","issued_at":"2026-12-04T10:00:00Z"}`))
	f.Add([]byte(`{"command_id":"cmd-2","kiosk_id":"kiosk-1","action":"lock","issued_by":"ann","issued_at":"2026-12-04T10:00:00Z","later":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := protocol.DecodeCommand(b)
		if err != nil {
			if protocol.AsError(err).Code == protocol.CodeInternal {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		if !protocol.ValidKioskID(c.KioskID) || !protocol.ValidRequestID(c.CommandID) {
			t.Fatalf("accepted %+v", c)
		}
	})
}

func FuzzDecodeCommandResult(f *testing.F) {
	f.Add([]byte(`{"command_id":"cmd-1","kiosk_id":"kiosk-1","status":"ok","at":"2026-12-04T10:00:01Z","labels_left":37}`))
	f.Add([]byte(`{"command_id":"cmd-1","kiosk_id":"kiosk-1","status":"rejected","at":"2026-12-04T10:00:01Z","error":{"code":"invalid_request","message":"no"}}`))
	f.Add([]byte(`{"command_id":"cmd-1","kiosk_id":"kiosk-1","status":"ok","at":"2026-12-04T10:00:01Z","diagnostics":{"firmware":"1.0","log":["a"]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.DecodeCommandResult(b)
		if err != nil {
			if protocol.AsError(err).Code == protocol.CodeInternal {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		if (r.Status == protocol.ResultRejected) != (r.Error != nil) {
			t.Fatalf("accepted %+v", r)
		}
	})
}

func FuzzVerifyRelease(f *testing.F) {
	f.Add([]byte(`{"version":"2.0.0","created":"2026-12-04T10:00:00Z","artifacts":[{"arch":"arm64","size":10,"sha256":"` + strings.Repeat("ab", 32) + `"}]}`))
	f.Add([]byte(`{"version":"../x","artifacts":[]}`))
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	pub := priv.Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, manifest []byte) {
		m, err := protocol.VerifyRelease(pub, manifest, ed25519.Sign(priv, manifest))
		if err != nil {
			return
		}
		if !protocol.ValidVersion(m.Version) || len(m.Artifacts) == 0 || strings.Contains(m.Version, "/") {
			t.Fatalf("accepted %+v", m)
		}
		if _, err := protocol.VerifyRelease(pub, append(manifest, ' '), ed25519.Sign(priv, manifest)); err == nil {
			t.Fatal("a manifest changed after signing verified")
		}
	})
}

// An API's error body, new or old shape, or anything else: no panic, and
// what it returns has a code.
func FuzzDecodeHTTPError(f *testing.F) {
	f.Add([]byte(`{"error":{"code":"payment_declined","message":"declined"}}`))
	f.Add([]byte(`{"code":"unauthorized","message":"old hubs sent this"}`))
	f.Add([]byte(`{"error":"forbidden"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if pe := protocol.DecodeHTTPError(b); pe != nil && pe.Code == "" {
			t.Fatalf("%q: an error without a code", b)
		}
	})
}

func FuzzDecodePrintResult(f *testing.F) {
	f.Add([]byte(`{"request_id":"r-1","status":"ok"}`))
	f.Add([]byte(`{"request_id":"r-1","status":"rejected","error":{"code":"kiosk_mismatch","message":"m"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.DecodePrintResult(b)
		if err != nil {
			return
		}
		re, _ := json.Marshal(r)
		if _, err := protocol.DecodePrintResult(re); err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", re, err)
		}
	})
}

func FuzzParseDate(f *testing.F) {
	for _, s := range []string{"2026-12-06", "2000-02-29", "1999-13-01", "", "2026-1-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := protocol.ParseDate(s)
		if err != nil {
			return
		}
		if back, err := protocol.ParseDate(d.String()); err != nil || back != d {
			t.Fatalf("%q: %s reads back as %s, %v", s, d, back, err)
		}
	})
}

// A rate table file, as ops drop into --rates: what validates prices
// every class at any weight without a panic.
func FuzzRateTable(f *testing.F) {
	good, _ := json.Marshal(prototest.Rates)
	f.Add(good)
	f.Add([]byte(`{"version":"v","effective":"2026-01-01","classes":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var rt protocol.RateTable
		if json.Unmarshal(b, &rt) != nil || rt.Validate() != nil {
			return
		}
		for _, c := range rt.Classes {
			for _, w := range []int64{-1, 0, 1, 28_349, 1 << 40} {
				if p, err := rt.Price(c.Class, w); err == nil && p < 0 {
					t.Fatalf("%s at %d mg costs %d", c.Class, w, p)
				}
			}
		}
	})
}
