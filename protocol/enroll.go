package protocol

import (
	"strings"
)

// EnrollPath is the hub's HTTP endpoint where a new kiosk trades the
// one-time code ops gave its installer for its broker credentials.
const EnrollPath = "/api/v1/enroll"

// RenewPath is where a kiosk, presenting its certificate, trades a new
// CSR for a new certificate.
const RenewPath = "/api/v1/renew"

// CAPath serves the device CA's certificate. Its answer's Date, like every
// answer's from the hub, is the hub's clock, which kiosks judge their
// certificates by.
const CAPath = "/api/v1/ca"

// EnrollRequest is POSTed to EnrollPath, over HTTPS.
type EnrollRequest struct {
	Code string `json:"code"` // as `hub kiosk add` printed it; case, spaces and dashes do not matter
	// CSR is a PEM certificate request for a key the kiosk made and keeps.
	// Without one the hub hands out a broker password, if it allows
	// passwords at all.
	CSR string `json:"csr,omitempty"`
}

// EnrollResult is the hub's answer: the kiosk's identity, and its
// certificate (or, on a hub that allows them, a broker password). Broker is
// empty when the hub uses an external broker it was not told the address
// of; the kiosk then uses the hub's host on port 8883 (1883 for a password).
type EnrollResult struct {
	KioskID  string `json:"kiosk_id"`
	Store    string `json:"store"`
	Broker   string `json:"broker,omitempty"`
	Username string `json:"username"`
	Password string `json:"password,omitempty"`
	// Certificate is the kiosk's client certificate and CAChain the device
	// CA's, both PEM.
	Certificate string `json:"certificate,omitempty"`
	CAChain     string `json:"ca_chain,omitempty"`
	// OriginZIP is the store's ZIP, when ops gave one (hub kiosk add --zip).
	OriginZIP ZIP `json:"origin_zip,omitempty"`
}

// RenewRequest is POSTed to RenewPath with the kiosk's current certificate.
type RenewRequest struct {
	CSR string `json:"csr"`
}

// RenewResult is the new certificate and the CA chain, PEM.
type RenewResult struct {
	Certificate string `json:"certificate"`
	CAChain     string `json:"ca_chain"`
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
	if err := decodeLenient(b, &r); err != nil {
		return nil, err
	}
	if !ValidKioskID(r.KioskID) || r.Username == "" || r.Password == "" && (r.Certificate == "" || r.CAChain == "") {
		return nil, Errorf(CodeInvalidRequest, "enrollment result: want a kiosk id, a user name, and a certificate with its CA chain or a password")
	}
	return &r, nil
}

// DecodeRenewRequest decodes a renewal.
func DecodeRenewRequest(b []byte) (*RenewRequest, error) {
	var r RenewRequest
	if err := decodeStrict(b, &r); err != nil {
		return nil, err
	}
	if r.CSR == "" {
		return nil, Errorf(CodeInvalidRequest, "csr: want a PEM certificate request")
	}
	return &r, nil
}

// DecodeRenewResult decodes the hub's answer to a renewal.
func DecodeRenewResult(b []byte) (*RenewResult, error) {
	var r RenewResult
	if err := decodeLenient(b, &r); err != nil {
		return nil, err
	}
	if r.Certificate == "" || r.CAChain == "" {
		return nil, Errorf(CodeInvalidRequest, "renewal result: want a certificate and the CA chain")
	}
	return &r, nil
}
