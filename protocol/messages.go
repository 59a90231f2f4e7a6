package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MaxMessageBytes bounds every JSON message; a purchase of a full sheet is
// about 2 KiB.
const MaxMessageBytes = 64 << 10

// MaxItems bounds the stamps in one purchase: one sheet.
const MaxItems = LabelsPerSheet

// MaxWeightMg bounds any weight a kiosk may report (10 lb). Rate classes
// have far lower limits; this only stops absurd numbers early.
const MaxWeightMg = 4_535_924

// PurchaseRequest asks the hub for one or more stamps. Published by a kiosk
// on TopicPurchase; repeated with the same RequestID until a result arrives.
type PurchaseRequest struct {
	RequestID string `json:"request_id"`
	KioskID   string `json:"kiosk_id"`
	OriginZIP ZIP    `json:"origin_zip"`
	// RateTable is the version of the rate table the kiosk priced with.
	RateTable string         `json:"rate_table"`
	Items     []PurchaseItem `json:"items"`
	Payment   Payment        `json:"payment"`
	// ReprintOf asks for a free reprint of a label that failed to print,
	// on the one new label in Items; Payment.Method is then "none".
	ReprintOf *LabelRef `json:"reprint_of,omitempty"`
}

// LabelRef names one label of an earlier purchase.
type LabelRef struct {
	RequestID   string `json:"request_id"`
	LabelSerial string `json:"label_serial"`
}

// PurchaseItem is one stamp.
type PurchaseItem struct {
	RateClass   string `json:"rate_class"`
	WeightMg    int64  `json:"weight_mg"`
	AmountMills Mills  `json:"amount_mills"`
	LabelSerial string `json:"label_serial"`
}

// Label returns the parsed label serial; Validate has checked it.
func (it PurchaseItem) Label() LabelSerial {
	l, _ := ParseLabelSerial(it.LabelSerial)
	return l
}

// Payment methods.
const (
	PayCardToken = "card_token" // a token from the kiosk's payment terminal
	PayAccount   = "account"    // a registered customer's prepaid account
	PayNone      = "none"       // a reprint: the stamp was paid for already
)

// Payment says how the customer pays. A kiosk never sends a card number:
// its payment terminal gives it a token and, for the receipt, brand and
// last four digits. A prepaid account pays only with a one-time PayCode
// the customer made in the portal: a kiosk's own credentials never move a
// customer's money. AccountID, if given, must be the code's account.
type Payment struct {
	Method    string `json:"method"`
	Token     string `json:"token,omitempty"`
	Brand     string `json:"brand,omitempty"`
	Last4     string `json:"last4,omitempty"`
	AccountID string `json:"account_id,omitempty"`
	PayCode   string `json:"pay_code,omitempty"`
}

// PayCodeLen is the number of base32 characters in a pay code, dashes and
// the PAY prefix aside: 16, 80 bits.
const PayCodeLen = 16

// FormatPayCode writes 16 base32 characters as the customer reads them:
// PAY-XXXX-XXXX-XXXX-XXXX.
func FormatPayCode(s string) string {
	s = NormalizePayCode(s)
	if s == "" {
		return ""
	}
	return "PAY-" + s[0:4] + "-" + s[4:8] + "-" + s[8:12] + "-" + s[12:16]
}

// NormalizePayCode returns a pay code as the hub keeps it (16 upper-case
// base32 characters, no prefix, spaces or dashes), or "" if it cannot be
// one.
func NormalizePayCode(s string) string {
	s = strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(s))
	if len(s) == PayCodeLen+3 {
		s = strings.TrimPrefix(s, "PAY")
	}
	return base32Code(s, PayCodeLen)
}

// Total is the sum of the items' amounts.
func (r *PurchaseRequest) Total() Mills {
	var t Mills
	for _, it := range r.Items {
		t += it.AmountMills
	}
	return t
}

// Validate checks every field and names the first bad one.
func (r *PurchaseRequest) Validate() error {
	if err := r.ValidateOrder(); err != nil {
		return err
	}
	if r.ReprintOf != nil {
		if len(r.Items) != 1 || r.Payment.Method != PayNone {
			return Errorf(CodePaymentInvalid, "a reprint has one item and payment method %q", PayNone)
		}
	} else if r.Payment.Method == PayNone {
		return Errorf(CodePaymentInvalid, "payment method %q is only for reprints", PayNone)
	}
	return r.Payment.Validate()
}

// ValidateOrder checks every field but the payment: what a kiosk checks
// before it asks the card terminal for the money.
func (r *PurchaseRequest) ValidateOrder() error {
	bad := func(format string, args ...any) error { return Errorf(CodeInvalidRequest, format, args...) }
	switch {
	case !ValidRequestID(r.RequestID):
		return bad("request_id: want 1-64 of [A-Za-z0-9_-]")
	case !ValidKioskID(r.KioskID):
		return bad("kiosk_id: want 1-32 of [A-Za-z0-9_-]")
	case len(r.Items) == 0 || len(r.Items) > MaxItems:
		return bad("items: want 1 to %d, got %d", MaxItems, len(r.Items))
	case r.RateTable == "" || len(r.RateTable) > 64:
		return bad("rate_table: the version of the table the items were priced on is required")
	}
	if r.ReprintOf != nil {
		if _, err := ParseLabelSerial(r.ReprintOf.LabelSerial); err != nil || !ValidRequestID(r.ReprintOf.RequestID) {
			return bad("reprint_of: want the request_id and label_serial of the label that failed")
		}
	}
	if _, err := r.OriginZIP.Number(); err != nil {
		return bad("origin_zip: want five digits")
	}
	seen := make(map[string]bool, len(r.Items))
	for i, it := range r.Items {
		l, err := ParseLabelSerial(it.LabelSerial)
		switch {
		case !validRateClass(it.RateClass):
			return bad("items[%d].rate_class: want four digits like 1100", i)
		case it.WeightMg <= 0 || it.WeightMg > MaxWeightMg:
			return bad("items[%d].weight_mg: want 1 to %d", i, MaxWeightMg)
		case it.AmountMills <= 0 || it.AmountMills > MaxPostage:
			return bad("items[%d].amount_mills: want 1 to %d", i, MaxPostage)
		case err != nil:
			return bad("items[%d].label_serial: want sheet-position like 1966-F8CF-03", i)
		case seen[l.String()]:
			return bad("items[%d].label_serial: %s appears twice", i, l)
		}
		seen[l.String()] = true
	}
	return nil
}

// HasCardNumber says whether s holds a card number: a run of 12 digits or
// more, spaces or dashes between them aside (RedactCardNumbers). It finds
// one inside other text too (track data such as 4111111111111111=2512...,
// or tok_4111111111111111), so that no token or field carries one into a
// journal, a log or the database.
func HasCardNumber(s string) bool { return RedactCardNumbers(s) != s }

// RedactCardNumbers takes out of s any run of 12 or more digits, however
// spaced or dashed: a card number, which is never logged, stored or echoed.
func RedactCardNumbers(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		j, digits := i, 0
		for j < len(s) && (s[j] >= '0' && s[j] <= '9' || digits > 0 && (s[j] == ' ' || s[j] == '-')) {
			if s[j] >= '0' && s[j] <= '9' {
				digits++
			}
			j++
		}
		switch {
		case digits >= 12:
			b.WriteString("[digits removed]")
			if s[j-1] == ' ' || s[j-1] == '-' {
				b.WriteByte(s[j-1])
			}
			i = j
		case j > i:
			b.WriteString(s[i:j])
			i = j
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String()
}

// Validate checks a payment as a purchase carries it.
func (p Payment) Validate() error {
	switch p.Method {
	case PayCardToken:
		if p.Token == "" || len(p.Token) > 128 {
			return Errorf(CodePaymentInvalid, "payment.token: want 1-128 characters")
		}
		if HasCardNumber(p.Token) {
			// Never carried, journalled or logged as a token.
			return Errorf(CodePaymentInvalid, "payment.token: that is a card number, not the payment terminal's token")
		}
		if p.Last4 != "" && (len(p.Last4) != 4 || !allDigits(p.Last4)) {
			return Errorf(CodePaymentInvalid, "payment.last4: want four digits")
		}
		if len(p.Brand) > 32 || HasCardNumber(p.Brand) {
			return Errorf(CodePaymentInvalid, "payment.brand: want the card's brand, at most 32 characters")
		}
	case PayAccount:
		if NormalizePayCode(p.PayCode) == "" {
			return Errorf(CodePaymentInvalid, "payment.pay_code: a prepaid account pays with a one-time code like PAY-XXXX-XXXX-XXXX-XXXX that the customer makes in the portal")
		}
		if len(p.AccountID) > 64 {
			return Errorf(CodePaymentInvalid, "payment.account_id: want at most 64 characters")
		}
	case PayNone:
	default:
		return Errorf(CodePaymentInvalid, "payment.method: want %q or %q", PayCardToken, PayAccount)
	}
	return nil
}

// Result statuses.
const (
	ResultOK       = "ok"
	ResultRejected = "rejected"
)

// PurchaseResult answers a PurchaseRequest on TopicPurchaseResult. A result
// for a repeated request_id is byte-identical to the first.
type PurchaseResult struct {
	RequestID string           `json:"request_id"`
	Status    string           `json:"status"`
	Error     *Error           `json:"error,omitempty"`
	Indicia   []IssuedIndicium `json:"indicia,omitempty"`
	// Approval is the card gateway's approval code for the sale's card
	// payment, printed on the customer's receipt; empty for other methods.
	Approval string `json:"approval,omitempty"`
}

// IssuedIndicium is one signed stamp, ready to print.
type IssuedIndicium struct {
	MeterNumber string `json:"meter_number"`
	RateClass   string `json:"rate_class"`
	AmountMills Mills  `json:"amount_mills"`
	LabelSerial string `json:"label_serial"`
	// Matrix is the 113-byte indicium (base64 in JSON).
	Matrix []byte `json:"matrix"`
}

// Rejected builds a rejection result from any error.
func Rejected(requestID string, err error) *PurchaseResult {
	return &PurchaseResult{RequestID: requestID, Status: ResultRejected, Error: AsError(err)}
}

// Validate checks the shape of a result.
func (r *PurchaseResult) Validate() error {
	switch r.Status {
	case ResultOK:
		if r.Error != nil || len(r.Indicia) == 0 || len(r.Indicia) > MaxItems {
			return Errorf(CodeInvalidRequest, "status ok: want 1-%d indicia and no error", MaxItems)
		}
		for i, in := range r.Indicia {
			if len(in.Matrix) != IndiciumLen {
				return Errorf(CodeInvalidRequest, "indicia[%d].matrix: %d bytes, want %d", i, len(in.Matrix), IndiciumLen)
			}
			if _, err := ParseLabelSerial(in.LabelSerial); err != nil {
				return Errorf(CodeInvalidRequest, "indicia[%d].label_serial: %v", i, err)
			}
		}
	case ResultRejected:
		if r.Error == nil || r.Error.Code == "" || len(r.Indicia) != 0 {
			return Errorf(CodeInvalidRequest, "status rejected: want an error and no indicia")
		}
	default:
		return Errorf(CodeInvalidRequest, "status: want %q or %q", ResultOK, ResultRejected)
	}
	return nil
}

// Print outcomes.
const (
	Printed     = "printed"
	PrintFailed = "failed"
)

// PrintReport tells the hub what happened to each label of a purchase. A
// failed label's indicium is voided; the registers never run backwards.
type PrintReport struct {
	RequestID string         `json:"request_id"`
	KioskID   string         `json:"kiosk_id"`
	Labels    []LabelOutcome `json:"labels"`
}

// LabelOutcome is one label's fate.
type LabelOutcome struct {
	LabelSerial string `json:"label_serial"`
	Outcome     string `json:"outcome"`
	// Reason for a failure: the printer's fault (cover_open, paper_out,
	// jam, offline, printer_error), printer_silent, label_unread,
	// wrong_label, journal_error, power_cut, no_answer (README:
	// PrintReport). The hub keeps print_failed for one that is not a short
	// lower-case token, or that is one of its own.
	Reason string `json:"reason,omitempty"`
}

// Validate checks the report.
func (r *PrintReport) Validate() error {
	bad := func(format string, args ...any) error { return Errorf(CodeInvalidRequest, format, args...) }
	if !ValidRequestID(r.RequestID) || !ValidKioskID(r.KioskID) {
		return bad("request_id, kiosk_id: want tokens of [A-Za-z0-9_-]")
	}
	if len(r.Labels) == 0 || len(r.Labels) > MaxItems {
		return bad("labels: want 1 to %d", MaxItems)
	}
	for i, l := range r.Labels {
		if _, err := ParseLabelSerial(l.LabelSerial); err != nil {
			return bad("labels[%d].label_serial: %v", i, err)
		}
		if l.Outcome != Printed && l.Outcome != PrintFailed {
			return bad("labels[%d].outcome: want %q or %q", i, Printed, PrintFailed)
		}
	}
	return nil
}

// PrintResult confirms a PrintReport on TopicPrintResult, once the hub has
// recorded it: the kiosk sends the report again until it hears this. A
// rejected report (malformed, for another kiosk) is not sent again.
type PrintResult struct {
	RequestID string `json:"request_id"`
	Status    string `json:"status"`
	Error     *Error `json:"error,omitempty"`
}

// DecodePrintResult decodes a print report's confirmation.
func DecodePrintResult(b []byte) (*PrintResult, error) {
	var r PrintResult
	if err := decodeLenient(b, &r); err != nil {
		return nil, err
	}
	if r.Status != ResultOK && r.Status != ResultRejected {
		return nil, Errorf(CodeInvalidRequest, "status: want %q or %q", ResultOK, ResultRejected)
	}
	return &r, nil
}

// StockLoad assigns sheets of labels to the kiosk that staff loaded them
// into, on TopicStock.
type StockLoad struct {
	RequestID string   `json:"request_id"`
	KioskID   string   `json:"kiosk_id"`
	Sheets    []string `json:"sheets"` // sheet serials as scanned, "1966-F8CF"
}

// Validate checks a stock load.
func (s *StockLoad) Validate() error {
	if !ValidRequestID(s.RequestID) || !ValidKioskID(s.KioskID) {
		return Errorf(CodeInvalidRequest, "request_id, kiosk_id: want tokens of [A-Za-z0-9_-]")
	}
	if len(s.Sheets) == 0 || len(s.Sheets) > 100 {
		return Errorf(CodeInvalidRequest, "sheets: want 1 to 100")
	}
	for i, sh := range s.Sheets {
		if _, err := ParseSheetSerial(sh); err != nil {
			return Errorf(CodeInvalidRequest, "sheets[%d]: want 8 hex digits like 1966-F8CF", i)
		}
	}
	return nil
}

// StockResult answers a StockLoad on TopicStockResult. Each sheet lists the
// positions still free on it.
type StockResult struct {
	RequestID string       `json:"request_id"`
	Status    string       `json:"status"`
	Error     *Error       `json:"error,omitempty"`
	Sheets    []SheetState `json:"sheets,omitempty"`
}

// SheetState is a sheet as the hub knows it.
type SheetState struct {
	Sheet string `json:"sheet"`
	Free  []int  `json:"free"` // positions 1-10 without an indicium
}

// RefundRequest asks for the money back for a label that failed to print,
// on TopicRefund.
type RefundRequest struct {
	RequestID string   `json:"request_id"`
	KioskID   string   `json:"kiosk_id"`
	Label     LabelRef `json:"label"`
}

// Validate checks a refund request.
func (r *RefundRequest) Validate() error {
	if !ValidRequestID(r.RequestID) || !ValidKioskID(r.KioskID) || !ValidRequestID(r.Label.RequestID) {
		return Errorf(CodeInvalidRequest, "request_id, kiosk_id, label.request_id: want tokens of [A-Za-z0-9_-]")
	}
	if _, err := ParseLabelSerial(r.Label.LabelSerial); err != nil {
		return Errorf(CodeInvalidRequest, "label.label_serial: want sheet-position like 1966-F8CF-03")
	}
	return nil
}

// RefundResult answers a RefundRequest on TopicRefundResult.
type RefundResult struct {
	RequestID   string `json:"request_id"`
	Status      string `json:"status"`
	Error       *Error `json:"error,omitempty"`
	AmountMills Mills  `json:"amount_mills,omitempty"`
}

// Telemetry is a kiosk's heartbeat on TopicTelemetry.
type Telemetry struct {
	KioskID    string    `json:"kiosk_id"`
	At         time.Time `json:"at"`
	Firmware   string    `json:"firmware"`
	UptimeS    int64     `json:"uptime_s"`
	LabelsLeft int       `json:"labels_left"`
	// LabelsUnknown: the kiosk has just started and not yet learned its
	// sheets' free labels from the hub, so LabelsLeft counts nothing yet.
	LabelsUnknown bool `json:"labels_unknown,omitempty"`
	// Paper, Printer and Scale are each one of TelemetryPaper,
	// TelemetryPrinter and TelemetryScale, or empty: not read yet.
	Paper   string `json:"paper"`
	Printer string `json:"printer"`
	Scale   string `json:"scale"`
	// LastError is the code of the kiosk's last error (hub_no_answer, an
	// error code, a print failure's reason): MaxTelemetryText bytes of
	// printable ASCII at most.
	LastError string `json:"last_error,omitempty"`
	Sales     int64  `json:"sales"`
	InService bool   `json:"in_service"`
	// Reasons say why the kiosk is not in service (README: the kiosk's
	// status reasons), when it is not.
	Reasons []string `json:"reasons,omitempty"`
}

// What a heartbeat may say of the kiosk's devices. The hub logs heartbeats
// and raises alerts from them, so a kiosk (or whoever holds its
// credentials) reports a state from these lists, not text of its own.
var (
	TelemetryPaper   = []string{"ok", "near_end", "out"}
	TelemetryPrinter = []string{"ok", "paper_out", "cover_open", "jam", "cutter_error", "printer_error", "offline"}
	TelemetryScale   = []string{"ok", "motion", "over_capacity", "under_capacity", "offline"}
)

// Limits on a heartbeat's free text: its firmware and last_error are at
// most MaxTelemetryText bytes of printable ASCII, and it gives at most
// MaxTelemetryReasons reasons, each a lower-case token of at most
// MaxReasonBytes of [a-z0-9_]. A kiosk has thirteen reasons, the longest 20
// bytes (head_scanner_offline).
const (
	MaxTelemetryText    = 64
	MaxTelemetryReasons = 16
	MaxReasonBytes      = 32
)

// Validate checks a heartbeat: its kiosk, its device states against the
// lists above, and the length and characters of its text. The message of
// an error never quotes the field's value.
func (t *Telemetry) Validate() error {
	bad := func(f string, args ...any) error { return Errorf(CodeInvalidRequest, f, args...) }
	state := func(field, v string, allowed []string) error {
		if v != "" && !slices.Contains(allowed, v) {
			return bad("%s: want one of %s, or empty", field, strings.Join(allowed, ", "))
		}
		return nil
	}
	if !ValidKioskID(t.KioskID) {
		return bad("kiosk_id: want 1-32 of [A-Za-z0-9_-]")
	}
	if err := state("paper", t.Paper, TelemetryPaper); err != nil {
		return err
	}
	if err := state("printer", t.Printer, TelemetryPrinter); err != nil {
		return err
	}
	if err := state("scale", t.Scale, TelemetryScale); err != nil {
		return err
	}
	if !printableASCII(t.Firmware, MaxTelemetryText) {
		return bad("firmware: want at most %d bytes of printable ASCII", MaxTelemetryText)
	}
	if !printableASCII(t.LastError, MaxTelemetryText) {
		return bad("last_error: want at most %d bytes of printable ASCII", MaxTelemetryText)
	}
	if len(t.Reasons) > MaxTelemetryReasons {
		return bad("reasons: at most %d", MaxTelemetryReasons)
	}
	for i, r := range t.Reasons {
		if r == "" || len(r) > MaxReasonBytes || strings.Trim(r, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			return bad("reasons[%d]: want 1-%d of [a-z0-9_]", i, MaxReasonBytes)
		}
	}
	return nil
}

// printableASCII: at most max bytes, each from space to tilde.
func printableASCII(s string, max int) bool {
	if len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// KioskConfig is what the hub tells one kiosk, retained on TopicConfig.
type KioskConfig struct {
	KioskID    string    `json:"kiosk_id"`
	HeartbeatS int       `json:"heartbeat_s"`
	Rates      RateTable `json:"rates"`
	// Store and StoreName name the kiosk's store, for its receipts.
	Store     string `json:"store,omitempty"`
	StoreName string `json:"store_name,omitempty"`
	// Settings are ops' settings for the kiosk: fleet-wide, then its
	// store's, then its own. Zero fields keep the kiosk's own defaults.
	Settings KioskSettings `json:"settings"`
	// StaffManaged says the store's staff are managed centrally: the hub
	// checks each staff login (TopicStaff), StaffNames are who may open
	// staff mode (empty: nobody), and the kiosk's own file's PIN and
	// badges no longer count. Their PIN and badge hashes stay at the hub,
	// so a stolen kiosk holds nothing to guess them from offline.
	StaffManaged bool     `json:"staff_managed,omitempty"`
	StaffNames   []string `json:"staff_names,omitempty"`
}

// RemedyLimit is how long after its issue a kiosk's stamp may still be
// reported failed or given a remedy: the longest remedy window (an hour)
// and an hour for a kiosk that lost the hub around a failed print. Later
// the hub refuses (remedy_not_allowed), and staff settle it at the counter.
const RemedyLimit = 2 * time.Hour

// KioskSettings are the settings ops manage centrally.
type KioskSettings struct {
	RemedyWindowS int    `json:"remedy_window_s,omitempty"` // time to choose a reprint or refund, 60-3600
	IdleTimeoutS  int    `json:"idle_timeout_s,omitempty"`  // the touchscreen returns to its start, 15-600
	Language      string `json:"language,omitempty"`        // the screen's default language: en, es
	LabelsLow     int    `json:"labels_low,omitempty"`      // labels_low alert below this many labels, 1-1000
	PaperAlert    string `json:"paper_alert,omitempty"`     // paper_out alert at out, or already at near_end
	HeartbeatS    int    `json:"heartbeat_s,omitempty"`     // at most the hub's own heartbeat period
}

// Languages are the screen languages a kiosk may default to.
var Languages = []string{"en", "es"}

// Validate checks each field set.
func (s KioskSettings) Validate() error {
	bad := func(f string, args ...any) error { return Errorf(CodeInvalidRequest, f, args...) }
	switch {
	case s.RemedyWindowS != 0 && (s.RemedyWindowS < 60 || s.RemedyWindowS > 3600):
		return bad("remedy_window_s: want 60 to 3600")
	case s.IdleTimeoutS != 0 && (s.IdleTimeoutS < 15 || s.IdleTimeoutS > 600):
		return bad("idle_timeout_s: want 15 to 600")
	case s.Language != "" && !slices.Contains(Languages, s.Language):
		return bad("language: want one of %s", strings.Join(Languages, ", "))
	case s.LabelsLow != 0 && (s.LabelsLow < 1 || s.LabelsLow > 1000):
		return bad("labels_low: want 1 to 1000")
	case s.PaperAlert != "" && s.PaperAlert != "out" && s.PaperAlert != "near_end":
		return bad("paper_alert: want out or near_end")
	case s.HeartbeatS != 0 && (s.HeartbeatS < 1 || s.HeartbeatS > 3600):
		return bad("heartbeat_s: want 1 to 3600")
	}
	return nil
}

// ValidStaffPIN: 4 to 8 digits.
func ValidStaffPIN(pin string) bool {
	if len(pin) < 4 || len(pin) > 8 {
		return false
	}
	for i := 0; i < len(pin); i++ {
		if pin[i] < '0' || pin[i] > '9' {
			return false
		}
	}
	return true
}

// ValidStaffBadge: the code printed on a staff badge, STAFF- and at most
// 58 more printable ASCII characters, no spaces.
func ValidStaffBadge(code string) bool {
	if !strings.HasPrefix(code, "STAFF-") || len(code) <= len("STAFF-") || len(code) > 64 {
		return false
	}
	for i := 0; i < len(code); i++ {
		if code[i] <= ' ' || code[i] > '~' {
			return false
		}
	}
	return true
}

// MaxStaff bounds a store's staff, so its config fits one message.
const MaxStaff = 200

// StaffLogin asks the hub whether a PIN or a badge opens staff mode at a
// kiosk whose store's staff are managed centrally (TopicStaff). It
// carries one of the two.
type StaffLogin struct {
	RequestID string `json:"request_id"`
	KioskID   string `json:"kiosk_id"`
	PIN       string `json:"pin,omitempty"`
	Badge     string `json:"badge,omitempty"`
}

// Validate checks the ids and that exactly one credential is well formed.
func (r *StaffLogin) Validate() error {
	if !ValidRequestID(r.RequestID) || !ValidKioskID(r.KioskID) {
		return Errorf(CodeInvalidRequest, "request_id, kiosk_id: want tokens of [A-Za-z0-9_-]")
	}
	switch {
	case r.PIN != "" && r.Badge != "":
		return Errorf(CodeInvalidRequest, "want a pin or a badge, not both")
	case r.PIN != "" && !ValidStaffPIN(r.PIN):
		return Errorf(CodeInvalidRequest, "pin: want 4 to 8 digits")
	case r.Badge != "" && !ValidStaffBadge(r.Badge):
		return Errorf(CodeInvalidRequest, "badge: want STAFF- and up to 58 printable characters")
	case r.PIN == "" && r.Badge == "":
		return Errorf(CodeInvalidRequest, "want a pin or a badge")
	}
	return nil
}

// StaffLoginResult answers a StaffLogin on TopicStaffResult: ok with the
// member's name, or unauthorized. RetryAfterS, with unauthorized, says
// that too many wrong tries were made and that none is checked until then.
type StaffLoginResult struct {
	RequestID   string `json:"request_id"`
	Status      string `json:"status"`
	Error       *Error `json:"error,omitempty"`
	Name        string `json:"name,omitempty"`
	RetryAfterS int    `json:"retry_after_s,omitempty"`
}

// Decode functions. Each bounds the size, rejects trailing data and, in a
// message the hub receives, unknown fields (README: Compatibility), validates, and returns an *Error with code
// malformed_message or a field code. When a request is malformed they still
// return what they could read of it, so the hub can answer its request_id.

// DecodePurchaseRequest decodes and validates a purchase request.
func DecodePurchaseRequest(b []byte) (*PurchaseRequest, error) {
	var r PurchaseRequest
	if err := decodeStrict(b, &r); err != nil {
		var id struct {
			RequestID string `json:"request_id"`
		}
		if json.Unmarshal(b, &id) == nil && ValidRequestID(id.RequestID) {
			return &PurchaseRequest{RequestID: id.RequestID}, err
		}
		return nil, err
	}
	return &r, r.Validate()
}

// DecodePurchaseResult decodes and validates a purchase result.
func DecodePurchaseResult(b []byte) (*PurchaseResult, error) {
	var r PurchaseResult
	if err := decodeLenient(b, &r); err != nil {
		return nil, err
	}
	return &r, r.Validate()
}

// DecodePrintReport decodes and validates a print report.
func DecodePrintReport(b []byte) (*PrintReport, error) {
	var r PrintReport
	if err := decodeStrict(b, &r); err != nil {
		return nil, err
	}
	return &r, r.Validate()
}

// DecodeStockLoad decodes and validates a stock load.
func DecodeStockLoad(b []byte) (*StockLoad, error) {
	var s StockLoad
	if err := decodeStrict(b, &s); err != nil {
		return nil, err
	}
	return &s, s.Validate()
}

// DecodeStockResult decodes a stock result.
func DecodeStockResult(b []byte) (*StockResult, error) {
	var s StockResult
	if err := decodeLenient(b, &s); err != nil {
		return nil, err
	}
	if s.Status != ResultOK && s.Status != ResultRejected {
		return nil, Errorf(CodeInvalidRequest, "status: want %q or %q", ResultOK, ResultRejected)
	}
	// A kiosk hands out the positions listed: each must be a label of a
	// sheet, once.
	for i, sh := range s.Sheets {
		if _, err := ParseSheetSerial(sh.Sheet); err != nil {
			return nil, Errorf(CodeInvalidRequest, "sheets[%d]: %q is not a sheet serial", i, sh.Sheet)
		}
		var seen [LabelsPerSheet + 1]bool
		for _, p := range sh.Free {
			if p < 1 || p > LabelsPerSheet || seen[p] {
				return nil, Errorf(CodeInvalidRequest, "sheets[%d].free: want positions 1 to %d, each once", i, LabelsPerSheet)
			}
			seen[p] = true
		}
	}
	return &s, nil
}

// DecodeRefundRequest decodes and validates a refund request.
func DecodeRefundRequest(b []byte) (*RefundRequest, error) {
	var r RefundRequest
	if err := decodeStrict(b, &r); err != nil {
		return nil, err
	}
	return &r, r.Validate()
}

// DecodeRefundResult decodes a refund result.
func DecodeRefundResult(b []byte) (*RefundResult, error) {
	var r RefundResult
	if err := decodeLenient(b, &r); err != nil {
		return nil, err
	}
	if r.Status != ResultOK && r.Status != ResultRejected {
		return nil, Errorf(CodeInvalidRequest, "status: want %q or %q", ResultOK, ResultRejected)
	}
	return &r, nil
}

// DecodeStaffLogin decodes and validates a staff login.
func DecodeStaffLogin(b []byte) (*StaffLogin, error) {
	var r StaffLogin
	if err := decodeStrict(b, &r); err != nil {
		return nil, err
	}
	return &r, r.Validate()
}

// DecodeStaffLoginResult decodes a staff login's answer.
func DecodeStaffLoginResult(b []byte) (*StaffLoginResult, error) {
	var r StaffLoginResult
	if err := decodeLenient(b, &r); err != nil {
		return nil, err
	}
	switch {
	case r.Status == ResultOK && (r.Name == "" || len(r.Name) > 64):
		return nil, Errorf(CodeInvalidRequest, "name: want 1-64 bytes with ok")
	case r.Status == ResultRejected && r.Error == nil:
		return nil, Errorf(CodeInvalidRequest, "error: want one with %q", ResultRejected)
	case r.Status != ResultOK && r.Status != ResultRejected:
		return nil, Errorf(CodeInvalidRequest, "status: want %q or %q", ResultOK, ResultRejected)
	case r.RetryAfterS < 0 || r.RetryAfterS > 86400:
		return nil, Errorf(CodeInvalidRequest, "retry_after_s: want 0 to 86400")
	}
	return &r, nil
}

// DecodeTelemetry decodes and validates a heartbeat: a field out of its
// list or too long is invalid_request.
func DecodeTelemetry(b []byte) (*Telemetry, error) {
	var t Telemetry
	if err := decodeStrict(b, &t); err != nil {
		return nil, err
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &t, nil
}

// DecodeKioskConfig decodes and validates a kiosk config.
func DecodeKioskConfig(b []byte) (*KioskConfig, error) {
	var c KioskConfig
	if err := decodeLenient(b, &c); err != nil {
		return nil, err
	}
	if !ValidKioskID(c.KioskID) || c.HeartbeatS < 1 || c.HeartbeatS > 3600 {
		return nil, Errorf(CodeInvalidRequest, "kiosk_id or heartbeat_s (1-3600) out of range")
	}
	if err := c.Rates.Validate(); err != nil {
		return nil, err
	}
	if err := c.Settings.Validate(); err != nil {
		return nil, err
	}
	if len(c.StaffNames) > MaxStaff {
		return nil, Errorf(CodeInvalidRequest, "staff_names: at most %d", MaxStaff)
	}
	for i, n := range c.StaffNames {
		if n == "" || len(n) > 64 {
			return nil, Errorf(CodeInvalidRequest, "staff_names[%d]: want 1-64 bytes", i)
		}
	}
	return &c, nil
}

// decodeStrict reads a message the hub receives: hubs are upgraded before
// their kiosks, so a field a hub does not know is a mistake or an attack.
func decodeStrict(b []byte, v any) error {
	if len(b) > MaxMessageBytes {
		return Errorf(CodeMalformed, "message is %d bytes, limit %d", len(b), MaxMessageBytes)
	}
	return DecodeJSON(b, v)
}

// decodeLenient reads a message a kiosk receives: a kiosk not yet updated
// ignores fields a newer hub added (README: Compatibility). Everything
// else is as strict: size, types, a key given twice, trailing data.
func decodeLenient(b []byte, v any) error {
	if len(b) > MaxMessageBytes {
		return Errorf(CodeMalformed, "message is %d bytes, limit %d", len(b), MaxMessageBytes)
	}
	return decodeJSON(b, v, false)
}

// DecodeJSON decodes one JSON object into v as strictly as every Frank
// message and API body is read: unknown fields are malformed_message, and
// a key given twice in any object (encoding/json would let the last one
// win, without regard to case) or anything after the object is
// invalid_request. It does not bound the size; the caller does.
func DecodeJSON(b []byte, v any) error { return decodeJSON(b, v, true) }

func decodeJSON(b []byte, v any, strict bool) error {
	d := json.NewDecoder(bytes.NewReader(b))
	if strict {
		d.DisallowUnknownFields()
	}
	// encoding/json quotes what it could not take (a key, a number): a card
	// number sent there must not come back, or reach a log, in the error.
	if err := d.Decode(v); err != nil {
		return Errorf(CodeMalformed, "%s", RedactCardNumbers(err.Error()))
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return Errorf(CodeInvalidRequest, "data after the JSON object: send one object")
	}
	if key, dup := duplicateKey(b); dup {
		// Quoted first: quoting turns a byte like \x80 into digits.
		return Errorf(CodeInvalidRequest, "key %s appears twice in one object", RedactCardNumbers(strconv.Quote(key)))
	}
	return nil
}

// duplicateKey finds a key named twice in one object of a document that
// decoded, comparing keys as encoding/json matches them to fields: without
// regard to ASCII case. A key that is not ASCII counts as a duplicate, since
// no Frank field has one and Unicode folding could alias a field.
//
// The document is valid JSON (it decoded), so one pass over its bytes,
// reading only strings and brackets, finds the keys; encoding/json's token
// reader did the same with an allocation per token, and cost as much as
// the decode itself (TestDuplicateKeyAgrees keeps it as the reference).
func duplicateKey(b []byte) (string, bool) {
	var stack []*keySet // nil entries are arrays
	prev := byte(0)     // the last structural character before a string
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '{':
			stack = append(stack, &keySet{})
			prev = c
		case '[':
			stack = append(stack, nil)
			prev = c
		case '}', ']':
			if len(stack) == 0 {
				return "", false // not what decoded; the decode reported it
			}
			stack = stack[:len(stack)-1]
			prev = c
		case ':', ',':
			prev = c
		case '"':
			j, escaped := i+1, false
			for ; j < len(b) && b[j] != '"'; j++ {
				if b[j] == '\\' {
					escaped = true
					j++
				}
			}
			if j >= len(b) {
				return "", false
			}
			if n := len(stack); n > 0 && stack[n-1] != nil && (prev == '{' || prev == ',') {
				key := string(b[i+1 : j])
				if escaped || !isASCII(key) { // as decoded: escapes, and invalid UTF-8 as U+FFFD
					if err := json.Unmarshal(b[i:j+1], &key); err != nil {
						return "", false
					}
				}
				if !isASCII(key) || !stack[n-1].add(strings.ToLower(key)) {
					return key, true
				}
			}
			prev = '"'
			i = j
		}
	}
	return "", false
}

// keySet is the folded keys of one object: a few in a slice, more in a map.
type keySet struct {
	few  []string
	many map[string]bool
}

// add adds k and reports whether it was new.
func (s *keySet) add(k string) bool {
	if s.many != nil {
		if s.many[k] {
			return false
		}
		s.many[k] = true
		return true
	}
	for _, have := range s.few {
		if have == k {
			return false
		}
	}
	if s.few = append(s.few, k); len(s.few) > 16 {
		s.many = make(map[string]bool, 2*len(s.few))
		for _, have := range s.few {
			s.many[have] = true
		}
		s.few = nil
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
