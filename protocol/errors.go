package protocol

import (
	"errors"
	"fmt"
)

// Code is a stable, machine-readable reason a request was refused. Kiosks,
// the web portal and API clients switch on it; the message beside it is for
// people. Codes are append-only: a published code is never renamed or reused.
type Code string

// The codes, all in one place. protocol/README.md documents each one, and a
// test keeps the two in step.
const (
	CodeMalformed           Code = "malformed_message"
	CodeInvalidRequest      Code = "invalid_request"
	CodeKioskMismatch       Code = "kiosk_mismatch"
	CodeUnknownKiosk        Code = "unknown_kiosk"
	CodeIdempotencyConflict Code = "idempotency_conflict"
	CodeRateClassUnknown    Code = "rate_class_unknown"
	CodeOverweight          Code = "overweight"
	CodeAmountMismatch      Code = "amount_mismatch"
	CodeRateTableStale      Code = "rate_table_stale"
	CodeLabelUnknown        Code = "label_unknown"
	CodeLabelNotAssigned    Code = "label_not_assigned"
	CodeLabelUsed           Code = "label_used"
	CodePaymentDeclined     Code = "payment_declined"
	CodePaymentTimeout      Code = "payment_timeout"
	CodeInsufficientFunds   Code = "insufficient_funds"
	CodePaymentInvalid      Code = "payment_invalid"
	CodeFundsUnavailable    Code = "funds_unavailable"
	CodeInspectionOverdue   Code = "inspection_overdue"
	CodeRemedyNotAllowed    Code = "remedy_not_allowed"
	CodeUnauthorized        Code = "unauthorized"
	CodeForbidden           Code = "forbidden"
	CodeNotFound            Code = "not_found"
	CodeKioskLocked         Code = "kiosk_locked"
	CodeUpdateFailed        Code = "update_failed"
	CodeServiceUnavailable  Code = "service_unavailable"
	CodeOutcomeUnknown      Code = "outcome_unknown"
	CodeInternal            Code = "internal_error"

	// CodeLabelAssignedElsewhere refuses a kiosk's own load of a sheet that
	// another kiosk or a customer holds: only ops move sheets.
	CodeLabelAssignedElsewhere Code = "label_assigned_elsewhere"
)

// CodeInfo describes one code for documentation and for clients that decide
// whether to retry.
type CodeInfo struct {
	Code Code
	// Retry says whether sending the same request again, with the same
	// request_id, may succeed later without the customer changing anything.
	Retry   bool
	Meaning string
}

// Codes lists every code a kiosk or API client can receive.
var Codes = []CodeInfo{
	{CodeMalformed, false, "The message is not valid JSON or XML of the expected type, is too large, or has unknown fields."},
	{CodeInvalidRequest, false, "A field is missing or out of range, a key is given twice, or data follows the message; the message names the field."},
	{CodeKioskMismatch, false, "The kiosk_id in the body differs from the kiosk named by the topic."},
	{CodeUnknownKiosk, false, "The kiosk is not provisioned at the hub."},
	{CodeIdempotencyConflict, false, "This request_id was used before with a different body; the first result stands."},
	{CodeRateClassUnknown, false, "The rate class is not in the current rate table."},
	{CodeOverweight, false, "The weight is over the limit of the rate class."},
	{CodeAmountMismatch, false, "amount_mills differs from the price the hub computes for the class and weight."},
	{CodeRateTableStale, false, "The request was priced on a rate table that is not the current one; reload config and re-price."},
	{CodeLabelUnknown, false, "The label serial was never issued."},
	{CodeLabelNotAssigned, false, "The label's sheet is assigned to another kiosk or customer."},
	{CodeLabelUsed, false, "The label already carries an indicium; the attempt is recorded as a fraud alert."},
	{CodeLabelAssignedElsewhere, false, "A kiosk asked to load a sheet that is loaded into another kiosk or assigned to a customer; ops move sheets between kiosks (hub stock load)."},
	{CodePaymentDeclined, false, "The card issuer declined the payment, or the purchase is over its pay code's most."},
	{CodePaymentTimeout, true, "The payment gateway did not answer in time; nothing was charged."},
	{CodeInsufficientFunds, false, "The prepaid account or card lacks funds; missing_mills says how much is missing."},
	{CodePaymentInvalid, false, "The payment data is unusable: a bad token (a card number sent as the token is refused, never carried on), card number or expiry, or a prepaid account without a pay code."},
	{CodeFundsUnavailable, true, "The hub could not fund postage from the postal authority right now."},
	{CodeInspectionOverdue, true, "The postal security device is past its inspection deadline; sales stop until it is reported."},
	{CodeUnauthorized, false, "The request carried no valid credentials (a wrong, used or expired pay code, a wrong login), or credentials for someone else than it names."},
	{CodeForbidden, false, "The credentials are good but do not allow this: an operator API call for ops only, made by store staff."},
	{CodeNotFound, false, "The operator API has no such kiosk, store, command, release or rollout, or none in the caller's stores."},
	{CodeRemedyNotAllowed, false, "A reprint or refund was asked for a label that did not fail to print, belongs to another sale, or already had its remedy, or for a stamp issued more than 2 hours before (staff may take it back at the counter); final, not asked again."},
	{CodeKioskLocked, false, "Ops locked the kiosk (suspected stolen): it sells nothing, gets no reprint or refund, and loads no stock until they unlock it."},
	{CodeUpdateFailed, false, "A release offered to a kiosk was refused (bad signature or hash, another architecture) or failed its health check, and the kiosk runs its previous version."},
	{CodeServiceUnavailable, true, "The hub cannot sell right now (no signing worker, store down, shutting down), or another purchase took the web sheet's next free label first."},
	{CodeOutcomeUnknown, true, "The hub cannot tell yet whether the sale happened (its store failed mid-commit, it stopped, or another hub still serves the request): print nothing, keep the labels held, and ask again with the same request_id until the answer is final."},
	{CodeInternal, true, "An unexpected hub fault; nothing was charged and no indicium was issued."},
}

// Error is a refusal with a code. It travels as the error object of a
// result message.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	// MissingMills is set with insufficient_funds.
	MissingMills Mills `json:"missing_mills,omitempty"`
	// Expired is set with remedy_not_allowed when the stamp was issued
	// more than RemedyLimit before, too long for a kiosk's remedy: a
	// refund refused so was not made, and staff at the counter settle it.
	// A refund refused without it had its remedy already, or was never the
	// kiosk's to ask.
	Expired bool `json:"expired,omitempty"`
}

func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return string(e.Code) + ": " + e.Message
}

// Is makes errors.Is(err, &Error{Code: c}) match any error with code c.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && t.Message == ""
}

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// AsError finds the *Error in err's chain. Errors without one become
// internal_error, so a caller always has a code to send.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeInternal, Message: "internal error"}
}
