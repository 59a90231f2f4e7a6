package protocol

import (
	"slices"
	"time"
	"unicode/utf8"
)

// The actions of a command: what ops may ask of one kiosk (README: Remote commands).
const (
	ActionOutOfService = "out_of_service" // stop selling, show Message
	ActionInService    = "in_service"     // undo out_of_service
	ActionRestart      = "restart"        // restart the kiosk service
	ActionDiagnostics  = "diagnostics"    // answer with Diagnostics
	ActionResyncStock  = "resync_stock"   // ask the hub again which labels are loaded and free
	ActionLock         = "lock"           // no sales and no staff mode until unlock
	ActionUnlock       = "unlock"
)

// Actions lists every action, in the order the console offers them.
var Actions = []string{ActionOutOfService, ActionInService, ActionRestart, ActionDiagnostics, ActionResyncStock, ActionLock, ActionUnlock, ActionUpdate}

// MaxCommandMessage bounds a command's message for the screen, in characters.
const MaxCommandMessage = 200

// A Command is an order from ops to one kiosk, on TopicCommand. The hub sends
// it again until the kiosk answers; a kiosk carries out a command id once
// and answers a repeat with its first result.
type Command struct {
	CommandID string    `json:"command_id"`
	KioskID   string    `json:"kiosk_id"`
	Action    string    `json:"action"`
	Message   string    `json:"message,omitempty"` // shown on the screen, for out_of_service and lock
	IssuedBy  string    `json:"issued_by"`         // the operator's login
	IssuedAt  time.Time `json:"issued_at"`
	// Release is the release offered, for update.
	Release *ReleaseOffer `json:"release,omitempty"`
}

// Validate checks a command. An action the kiosk does not know is not an
// error here: a newer hub may have more, and the kiosk refuses it in its
// result.
func (c *Command) Validate() error {
	if !ValidRequestID(c.CommandID) || !ValidKioskID(c.KioskID) {
		return Errorf(CodeInvalidRequest, "command_id, kiosk_id: want tokens of [A-Za-z0-9_-]")
	}
	if c.Action == "" || len(c.Action) > 32 {
		return Errorf(CodeInvalidRequest, "action: want 1 to 32 bytes")
	}
	if !utf8.ValidString(c.Message) || utf8.RuneCountInString(c.Message) > MaxCommandMessage {
		return Errorf(CodeInvalidRequest, "message: want at most %d characters of UTF-8", MaxCommandMessage)
	}
	if c.IssuedBy == "" || len(c.IssuedBy) > 64 {
		return Errorf(CodeInvalidRequest, "issued_by: want 1 to 64 bytes")
	}
	return nil
}

// KnownAction says whether a is one of Actions.
func KnownAction(a string) bool { return slices.Contains(Actions, a) }

// CommandResult is a kiosk's answer to a Command, on TopicCommandResult.
type CommandResult struct {
	CommandID   string       `json:"command_id"`
	KioskID     string       `json:"kiosk_id"`
	Status      string       `json:"status"` // ok or rejected
	Error       *Error       `json:"error,omitempty"`
	At          time.Time    `json:"at"`
	Diagnostics *Diagnostics `json:"diagnostics,omitempty"` // for diagnostics
	LabelsLeft  *int         `json:"labels_left,omitempty"` // for resync_stock
	Firmware    string       `json:"firmware,omitempty"`    // for update: the version running now
}

// Validate checks a command result.
func (r *CommandResult) Validate() error {
	if !ValidRequestID(r.CommandID) || !ValidKioskID(r.KioskID) {
		return Errorf(CodeInvalidRequest, "command_id, kiosk_id: want tokens of [A-Za-z0-9_-]")
	}
	if r.Status != ResultOK && r.Status != ResultRejected {
		return Errorf(CodeInvalidRequest, "status: want %q or %q", ResultOK, ResultRejected)
	}
	if (r.Status == ResultRejected) != (r.Error != nil) {
		return Errorf(CodeInvalidRequest, "error: wanted with status %q only", ResultRejected)
	}
	if r.LabelsLeft != nil && *r.LabelsLeft < 0 {
		return Errorf(CodeInvalidRequest, "labels_left: want 0 or more")
	}
	return nil
}

// Diagnostics is what a kiosk reports of itself for ops: versions, devices,
// its journal and its recent log.
type Diagnostics struct {
	Firmware  string   `json:"firmware"`
	GoVersion string   `json:"go_version"`
	OS        string   `json:"os"`
	Arch      string   `json:"arch"`
	UptimeS   int64    `json:"uptime_s"`
	Ready     bool     `json:"ready"`
	Reasons   []string `json:"reasons"` // why the kiosk does not sell, if it does not
	Printer   string   `json:"printer"`
	Paper     string   `json:"paper"`
	Scale     string   `json:"scale"`
	Scanner   string   `json:"scanner"`
	Panel     string   `json:"panel"`
	// Journal summary: sales the journal holds open, and the sheets loaded.
	OpenSales  int `json:"open_sales"`
	Sheets     int `json:"sheets"`
	LabelsLeft int `json:"labels_left"`
	// Log is the kiosk's most recent log lines, oldest first, cut to fit
	// one message.
	Log []string `json:"log"`
}

// DecodeCommand decodes and validates a command; the kiosk reads it.
func DecodeCommand(b []byte) (*Command, error) {
	var c Command
	if err := decodeLenient(b, &c); err != nil {
		return nil, err
	}
	return &c, c.Validate()
}

// DecodeCommandResult decodes and validates a command result; the hub
// reads it.
func DecodeCommandResult(b []byte) (*CommandResult, error) {
	var r CommandResult
	if err := decodeStrict(b, &r); err != nil {
		return nil, err
	}
	return &r, r.Validate()
}
