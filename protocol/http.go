package protocol

import (
	"encoding/json"
	"net/http"
)

// HTTPStatus is the status every Frank HTTP API answers a code with: the
// kiosk's local API, the hub's API and the operator API alike. The
// README's table of codes lists it beside each.
func (c Code) HTTPStatus() int {
	switch c {
	case CodeMalformed, CodeInvalidRequest:
		return http.StatusBadRequest
	case CodeUnauthorized:
		return http.StatusUnauthorized
	case CodePaymentDeclined, CodeInsufficientFunds, CodePaymentInvalid:
		return http.StatusPaymentRequired
	case CodeForbidden, CodeLabelUnknown, CodeLabelNotAssigned:
		return http.StatusForbidden
	case CodeNotFound:
		return http.StatusNotFound
	case CodeLabelUsed, CodeIdempotencyConflict:
		return http.StatusConflict
	case CodeKioskLocked:
		return http.StatusLocked
	}
	for _, ci := range Codes {
		if ci.Code == c && ci.Retry {
			return http.StatusServiceUnavailable
		}
	}
	return http.StatusUnprocessableEntity
}

// ErrorBody is the JSON body of every error a Frank HTTP API answers:
// {"error": {"code": "...", "message": "..."}}, the same error object a
// rejected purchase result carries.
type ErrorBody struct {
	Error *Error `json:"error"`
}

// HTTPError is the status and body that answer err: a refusal's own code,
// or internal_error for anything else (whose detail stays in the log).
func HTTPError(err error) (int, ErrorBody) {
	e := AsError(err)
	return e.Code.HTTPStatus(), ErrorBody{Error: e}
}

// DecodeHTTPError reads the error in an API's error body, or nil if there
// is none. It also reads the bare error object hubs before 2026-12 sent.
func DecodeHTTPError(b []byte) *Error {
	var body ErrorBody
	if json.Unmarshal(b, &body) == nil && body.Error != nil && body.Error.Code != "" {
		return body.Error
	}
	var bare Error
	if json.Unmarshal(b, &bare) == nil && bare.Code != "" {
		return &bare
	}
	return nil
}
