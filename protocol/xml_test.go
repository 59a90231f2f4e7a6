package protocol_test

import (
	"encoding/xml"
	"log/slog"
	"strings"
	"testing"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
)

func TestPatentWebStampRequestRoundTrip(t *testing.T) {
	r, err := protocol.DecodeWebStampRequest([]byte(prototest.PatentWebStampRequest))
	if err != nil {
		t.Fatal(err)
	}
	want := protocol.WebStampRequest{LoginID: "TestPrint", Amount: 330, RateClass: "1100", FIM: 0,
		SerialNumber: "1966-F8CF", CCNameOnCard: "Joe Customer", CCNumber: "0000111122223333", CCExp: "0401"}
	want.XMLName = r.XMLName
	if *r != want {
		t.Fatalf("decoded %+v", *r)
	}
	b, err := xml.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := protocol.DecodeWebStampRequest(b)
	if err != nil || *r2 != *r {
		t.Fatalf("round trip: %+v, %v", r2, err)
	}
}

func TestPatentIndiciumRoundTrip(t *testing.T) {
	x, err := protocol.DecodeXMLIndicium([]byte(prototest.PatentIndicium))
	if err != nil {
		t.Fatal(err)
	}
	if x.MeterNumber != "042N50000061" || x.RateClass != "1100" || x.LPO != "Warrenton, VA" || x.Amount != 330 {
		t.Fatalf("decoded %+v", x)
	}
	// The patent's matrix is its 89-byte legacy layout: version 2, DSA.
	if len(x.Matrix) != 89 || x.Matrix[0] != 2 || string(x.Matrix[45:49]) != "1100" {
		t.Fatalf("matrix %d bytes: %x", len(x.Matrix), x.Matrix)
	}
	b, err := xml.Marshal(x)
	if err != nil {
		t.Fatal(err)
	}
	x2, err := protocol.DecodeXMLIndicium(b)
	if err != nil || x2.MeterNumber != x.MeterNumber || string(x2.Matrix) != string(x.Matrix) || x2.LPO != x.LPO {
		t.Fatalf("round trip: %+v, %v", x2, err)
	}
}

func TestWebStampRequestLogRedactsCard(t *testing.T) {
	r, _ := protocol.DecodeWebStampRequest([]byte(prototest.PatentWebStampRequest))
	var sb strings.Builder
	slog.New(slog.NewTextHandler(&sb, nil)).Info("request", "req", *r)
	if strings.Contains(sb.String(), "0000111122223333") || !strings.Contains(sb.String(), "3333") {
		t.Fatalf("log line: %s", sb.String())
	}
}

func TestXMLRejects(t *testing.T) {
	for _, bad := range []string{"", "<Indicium>", "<Indicium><Matrix>!!!</Matrix></Indicium>", "<Other/>"} {
		if _, err := protocol.DecodeXMLIndicium([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// One document has one root: a second root element, or text after the
// first, is invalid_request; comments and white space may follow.
func TestXMLOneRoot(t *testing.T) {
	good := `<server.bp_RequestWebStampParams><LoginID>a</LoginID><Amount>780</Amount><RateClass>1100</RateClass><FIM>0</FIM><SerialNumber>1966-F8CF</SerialNumber></server.bp_RequestWebStampParams>`
	if _, err := protocol.DecodeWebStampRequest([]byte(good + "\n<!-- sent by a test -->\n")); err != nil {
		t.Fatalf("one root and a comment: %v", err)
	}
	for _, tail := range []string{good, "<x/>", "text"} {
		_, err := protocol.DecodeWebStampRequest([]byte(good + tail))
		if c := protocol.AsError(err).Code; err == nil || c != protocol.CodeInvalidRequest {
			t.Errorf("followed by %.20q: %v, want invalid_request", tail, err)
		}
	}
}

// An element given twice is invalid_request and an unknown one
// malformed_message, as in JSON: encoding/xml alone lets the last
// <Amount> win and skips what it does not know.
func TestXMLFieldTwiceOrUnknownRefused(t *testing.T) {
	const open, rest = `<server.bp_RequestWebStampParams><LoginID>a</LoginID>`, `<RateClass>1100</RateClass></server.bp_RequestWebStampParams>`
	for _, c := range []struct {
		body string
		want protocol.Code
	}{
		{`<Amount>330</Amount><Amount>99000</Amount>`, protocol.CodeInvalidRequest},
		{`<Amount>330</Amount><CCNumber>1</CCNumber><CCNumber>2</CCNumber>`, protocol.CodeInvalidRequest},
		{`<Amount>330</Amount><Bogus><Deep/></Bogus>`, protocol.CodeMalformed},
		{`<Amount>330</Amount><amount>1</amount>`, protocol.CodeMalformed}, // XML names are case-sensitive
		{`<Amount>330<Amount>1</Amount></Amount>`, protocol.CodeMalformed},
	} {
		r, err := protocol.DecodeWebStampRequest([]byte(open + c.body + rest))
		if got := protocol.AsError(err).Code; err == nil || got != c.want {
			t.Errorf("%s: %+v, %v; want %s", c.body, r, err, c.want)
		}
	}
	if _, err := protocol.DecodeWebStampRequest([]byte(`<server.bp_RequestWebStampParams Amount="1"><LoginID>a</LoginID></server.bp_RequestWebStampParams>`)); protocol.AsError(err).Code != protocol.CodeMalformed {
		t.Errorf("an unknown attribute: %v, want malformed_message", err)
	}
	if _, err := protocol.DecodeWebStampRequest([]byte(`<server.bp_RequestWebStampParams xmlns="urn:x"><LoginID>a</LoginID></server.bp_RequestWebStampParams>`)); err != nil {
		t.Errorf("a namespace declaration: %v", err)
	}
	// The hub's answer read by a client: a field a newer hub added is
	// skipped, one given twice is not.
	ind := strings.Replace(prototest.PatentIndicium, "<FIM>0</FIM>", "<FIM>0</FIM><Extra><x/></Extra>", 1)
	if _, err := protocol.DecodeXMLIndicium([]byte(ind)); err != nil {
		t.Errorf("an Indicium with a newer field: %v", err)
	}
	ind = strings.Replace(prototest.PatentIndicium, "<Amount>330</Amount>", "<Amount>330</Amount><Amount>1</Amount>", 1)
	if _, err := protocol.DecodeXMLIndicium([]byte(ind)); protocol.AsError(err).Code != protocol.CodeInvalidRequest {
		t.Errorf("an Indicium with Amount twice: %v, want invalid_request", err)
	}
}

// A card number sent where the XML API wants a number is refused without
// being echoed back: the decoder's own error quotes the text it could not
// read.
func TestXMLErrorEchoesNoCardNumber(t *testing.T) {
	for _, doc := range []string{
		`<server.bp_RequestWebStampParams><LoginID>a</LoginID><Amount>4111 1111 1111 1111</Amount><RateClass>1100</RateClass><FIM>0</FIM><SerialNumber>1966-F8CF</SerialNumber></server.bp_RequestWebStampParams>`,
		`<server.bp_RequestWebStampParams><LoginID>a</LoginID><Amount>4111111111111111</Amount></server.bp_RequestWebStampParams>&4111111111111111;`,
		`<server.bp_RequestWebStampParams><LoginID>&4111-1111-1111-1111;</LoginID></server.bp_RequestWebStampParams>`,
	} {
		_, err := protocol.DecodeWebStampRequest([]byte(doc))
		if err == nil {
			t.Fatalf("%.60q: decoded", doc)
		}
		if msg := protocol.AsError(err).Message; protocol.HasCardNumber(msg) {
			t.Errorf("the error echoes the card number: %s", msg)
		}
	}
}

// HasCardNumber finds a card number alone or inside other text, however
// spaced, and nothing shorter.
func TestHasCardNumber(t *testing.T) {
	for s, want := range map[string]bool{
		"4111111111111111":                     true,
		"4111 1111-1111 1111":                  true,
		";4111111111111111=25121010000000000?": true,
		"tok_4111111111111111":                 true,
		"x 5000 0000 0000 y":                   true, // 12 digits: Maestro's shortest
		"tok_approve_ABCDEFGH2345":             false,
		"12345678901":                          false,
		"2026-12-07 12:00:00":                  false,
		"1966-F8CF-01":                         false,
	} {
		if got := protocol.HasCardNumber(s); got != want {
			t.Errorf("HasCardNumber(%q) = %v, want %v", s, got, want)
		}
	}
}
