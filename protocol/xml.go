package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"strings"
)

// WebStampRequest is the patent's purchase request,
// <server.bp_RequestWebStampParams>, as posted to the hub's XML API.
type WebStampRequest struct {
	XMLName      xml.Name `xml:"server.bp_RequestWebStampParams"`
	LoginID      string   `xml:"LoginID"`
	Amount       Mills    `xml:"Amount"` // mills: 330 is $0.33
	RateClass    string   `xml:"RateClass"`
	FIM          int      `xml:"FIM"` // unused legacy field, 0
	SerialNumber string   `xml:"SerialNumber"`
	CCNameOnCard string   `xml:"CCNameOnCard,omitempty"`
	CCNumber     string   `xml:"CCNumber,omitempty"`
	CCExp        string   `xml:"CCExp,omitempty"` // MMYY
}

// LogValue keeps the card number out of logs: only the last four digits.
func (r WebStampRequest) LogValue() slog.Value {
	last4 := ""
	if n := len(r.CCNumber); n >= 4 {
		last4 = r.CCNumber[n-4:]
	}
	return slog.GroupValue(
		slog.String("login_id", r.LoginID),
		slog.Int64("amount_mills", int64(r.Amount)),
		slog.String("rate_class", r.RateClass),
		slog.String("serial", r.SerialNumber),
		slog.String("card_last4", last4),
	)
}

// XMLIndicium is the patent's <Indicium> answer.
type XMLIndicium struct {
	XMLName     xml.Name    `xml:"Indicium"`
	MeterNumber string      `xml:"MeterNumber"`
	RateClass   string      `xml:"RateClass"`
	FIM         int         `xml:"FIM"`
	LPO         string      `xml:"LPO,omitempty"` // the licence the indicium was issued under (the patent's example: a licensing post office)
	Amount      Mills       `xml:"Amount"`
	Matrix      Base64Bytes `xml:"Matrix"`
}

// XMLError is the XML API's refusal.
type XMLError struct {
	XMLName xml.Name `xml:"Error"`
	Code    Code     `xml:"Code"`
	Message string   `xml:"Message"`
	// MissingMills is set with insufficient_funds.
	MissingMills Mills `xml:"MissingMills,omitempty"`
}

// Base64Bytes is binary data as base64 text. Reading ignores white space,
// because the patent's own example wraps its Matrix across lines.
type Base64Bytes []byte

// MarshalText encodes standard base64.
func (b Base64Bytes) MarshalText() ([]byte, error) {
	return []byte(base64.StdEncoding.EncodeToString(b)), nil
}

// UnmarshalText decodes standard base64, ignoring white space.
func (b *Base64Bytes) UnmarshalText(t []byte) error {
	clean := strings.Join(strings.Fields(string(t)), "")
	v, err := base64.StdEncoding.DecodeString(clean)
	if err != nil {
		return Errorf(CodeMalformed, "base64: %v", err)
	}
	*b = v
	return nil
}

// DecodeWebStampRequest reads a <server.bp_RequestWebStampParams> document.
// Field rules (Luhn, expiry, label stock) belong to the hub.
func DecodeWebStampRequest(b []byte) (*WebStampRequest, error) {
	var r WebStampRequest
	if err := decodeXML(b, &r, true); err != nil {
		return nil, err
	}
	return &r, nil
}

// DecodeXMLIndicium reads an <Indicium> document. As a kiosk reads the
// hub's JSON, an element a newer hub added is skipped; one given twice is
// refused all the same.
func DecodeXMLIndicium(b []byte) (*XMLIndicium, error) {
	var r XMLIndicium
	if err := decodeXML(b, &r, false); err != nil {
		return nil, err
	}
	return &r, nil
}

// decodeXML reads one document into v, a struct of text fields, as
// strictly as DecodeJSON reads JSON: encoding/xml alone lets the last of
// two <Amount>s win and skips elements it does not know, so a request
// could say one thing to a reader and another to the hub. An element given
// twice is invalid_request; with strict, an unknown element or attribute
// is malformed_message.
func decodeXML(b []byte, v any, strict bool) error {
	if len(b) > MaxMessageBytes {
		return Errorf(CodeMalformed, "document is %d bytes, limit %d", len(b), MaxMessageBytes)
	}
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	if err := d.Decode(v); err != nil {
		return Errorf(CodeMalformed, "xml: %s", RedactCardNumbers(err.Error()))
	}
	if err := xmlFieldsOnce(b, v, strict); err != nil {
		return err
	}
	// One document, one root: after it only white space, comments and
	// processing instructions may follow.
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return Errorf(CodeMalformed, "xml after the root element: %s", RedactCardNumbers(err.Error()))
		}
		switch t := tok.(type) {
		case xml.Comment, xml.ProcInst:
		case xml.CharData:
			if len(bytes.TrimSpace(t)) > 0 {
				return Errorf(CodeInvalidRequest, "text after the root element: send one document")
			}
		default:
			return Errorf(CodeInvalidRequest, "a second root element: send one document")
		}
	}
}

// xmlFieldsOnce walks a document that decoded into v: each child of the
// root must be one of v's fields, named once, holding text only. The
// decode ran first, so the document is well formed here.
func xmlFieldsOnce(b []byte, v any, strict bool) error {
	known := map[string]bool{}
	t := reflect.TypeOf(v).Elem()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("xml"), ",")
		if name != "" && name != "-" && t.Field(i).Name != "XMLName" {
			known[name] = true
		}
	}
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	seen := map[string]bool{}
	depth := 0
	for {
		tok, err := d.Token()
		if err != nil {
			return Errorf(CodeMalformed, "xml: %s", RedactCardNumbers(err.Error()))
		}
		switch el := tok.(type) {
		case xml.StartElement:
			depth++
			if strict {
				for _, a := range el.Attr {
					if a.Name.Space != "xmlns" && a.Name.Local != "xmlns" {
						return Errorf(CodeMalformed, "xml: unknown attribute %s on <%s>", a.Name.Local, el.Name.Local)
					}
				}
			}
			switch name := el.Name.Local; {
			case depth == 2 && known[name]:
				if seen[name] {
					return Errorf(CodeInvalidRequest, "element <%s> appears twice", name)
				}
				seen[name] = true
			case depth == 2 && !strict: // skipped whole, as the decode did
				if err := d.Skip(); err != nil {
					return Errorf(CodeMalformed, "xml: %s", RedactCardNumbers(err.Error()))
				}
				depth--
			case depth == 2:
				return Errorf(CodeMalformed, "xml: unknown element <%s>", name)
			case depth > 2:
				return Errorf(CodeMalformed, "xml: element <%s> inside a field: fields hold text only", name)
			}
		case xml.EndElement:
			if depth--; depth == 0 {
				return nil
			}
		}
	}
}
