package protocol

import (
	"strings"
)

// EnrollPath is the hub's HTTP endpoint where a new kiosk trades the
// one-time code ops gave its installer for its broker credentials.
const EnrollPath = "/api/v1/enroll"

// EnrollRequest is POSTed to EnrollPath.
type EnrollRequest struct {
	Code string `json:"code"` // as `hub kiosk add` printed it; case, spaces and dashes do not matter
}

// EnrollResult is the hub's answer: the kiosk's identity and broker
// credentials. Broker is empty when the hub uses an external broker it was
// not told the address of; the kiosk then uses the hub's host on port 1883.
type EnrollResult struct {
	KioskID  string `json:"kiosk_id"`
	Store    string `json:"store"`
	Broker   string `json:"broker,omitempty"`
	Username string `json:"username"`
	Password string `json:"password"`
	// OriginZIP is the store's ZIP, when ops gave one (hub kiosk add --zip).
	OriginZIP ZIP `json:"origin_zip,omitempty"`
}

// EnrollCodeLen is the number of characters in an enrollment code,
// dashes aside: 20 of base32, 100 bits.
const EnrollCodeLen = 20

// NormalizeEnrollCode returns a code as the hub stores it (upper case, no
// spaces or dashes), or "" if it cannot be one.
func NormalizeEnrollCode(s string) string {
	return base32Code(strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(s)), EnrollCodeLen)
}

// base32Code returns s if it is n characters of upper-case base32, else "".
func base32Code(s string, n int) string {
	if len(s) != n {
		return ""
	}
	for _, c := range s {
		if !(c >= 'A' && c <= 'Z' || c >= '2' && c <= '7') {
			return ""
		}
	}
	return s
}

// DecodeEnrollRequest decodes and checks an enrollment request.
func DecodeEnrollRequest(b []byte) (*EnrollRequest, error) {
	var r EnrollRequest
	if err := decodeStrict(b, &r); err != nil {
		return nil, err
	}
	if NormalizeEnrollCode(r.Code) == "" {
		return nil, Errorf(CodeInvalidRequest, "code: want the %d-character code `hub kiosk add` printed", EnrollCodeLen)
	}
	return &r, nil
}

// DecodeEnrollResult decodes the hub's answer to an enrollment.
func DecodeEnrollResult(b []byte) (*EnrollResult, error) {
	var r EnrollResult
	if err := decodeStrict(b, &r); err != nil {
		return nil, err
	}
	if !ValidKioskID(r.KioskID) || r.Password == "" || r.Username == "" {
		return nil, Errorf(CodeInvalidRequest, "enrollment result: want a kiosk id, user name and password")
	}
	return &r, nil
}
