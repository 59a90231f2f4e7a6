package protocol_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/frank-postage/frank/protocol"
)

// realHeartbeat is what a kiosk sends (appliance/kiosk's Telemetry).
func realHeartbeat() protocol.Telemetry {
	return protocol.Telemetry{KioskID: "kiosk-1", Firmware: "v1.4.0-3-gabc1234-dirty", UptimeS: 3600, LabelsLeft: 37,
		Paper: "ok", Printer: "ok", Scale: "ok", LastError: "hub_no_answer", Sales: 12, InService: true}
}

// Every state a kiosk reports of its printer, paper and scale, and every
// reason it gives for not selling, is taken: a hub that refused one would
// take the kiosk for silent.
func TestTelemetryTakesWhatKiosksSend(t *testing.T) {
	var beats []protocol.Telemetry
	for _, p := range append(protocol.TelemetryPaper, "") {
		tm := realHeartbeat()
		tm.Paper = p
		beats = append(beats, tm)
	}
	for _, p := range append(protocol.TelemetryPrinter, "") {
		tm := realHeartbeat()
		tm.Printer = p
		beats = append(beats, tm)
	}
	for _, s := range append(protocol.TelemetryScale, "") { // "": a scale not read yet
		tm := realHeartbeat()
		tm.Scale = s
		beats = append(beats, tm)
	}
	// appliance/kiosk's Status reasons, all at once.
	all := realHeartbeat()
	all.InService, all.Reasons = false, []string{"locked", "ops_out_of_service", "out_of_service", "wrong_stock", "hub_offline",
		"certificate_expired", "checking_stock", "out_of_labels", "paper_out", "printer_fault", "door_open"}
	beats = append(beats, all)
	for _, le := range []string{"", "hub_no_answer", "insufficient_funds", "printer_silent", "label_assigned_elsewhere"} {
		tm := realHeartbeat()
		tm.LastError = le
		beats = append(beats, tm)
	}
	for _, fw := range []string{"", "dev", "1.0.0", "twin-1"} {
		tm := realHeartbeat()
		tm.Firmware = fw
		beats = append(beats, tm)
	}
	for _, tm := range beats {
		b, _ := json.Marshal(tm)
		if _, err := protocol.DecodeTelemetry(b); err != nil {
			t.Errorf("%s: %v", b, err)
		}
	}
}

// A heartbeat whose device state is not one of the lists, or whose text
// is too long or not printable, is invalid_request, and the error does not
// repeat what it was given.
func TestTelemetryRefusesUnknownAndOversizeFields(t *testing.T) {
	long := strings.Repeat("P", 60_000)
	many := make([]string, protocol.MaxTelemetryReasons+1)
	for i := range many {
		many[i] = "door_open"
	}
	for name, edit := range map[string]func(*protocol.Telemetry){
		"printer unknown":        func(t *protocol.Telemetry) { t.Printer = "on_fire" },
		"printer long":           func(t *protocol.Telemetry) { t.Printer = long },
		"paper unknown":          func(t *protocol.Telemetry) { t.Paper = "OK" },
		"scale unknown":          func(t *protocol.Telemetry) { t.Scale = "none" },
		"last_error long":        func(t *protocol.Telemetry) { t.LastError = strings.Repeat("e", protocol.MaxTelemetryText+1) },
		"last_error control":     func(t *protocol.Telemetry) { t.LastError = "jam\n\x1b[31mALERT" },
		"firmware long":          func(t *protocol.Telemetry) { t.Firmware = long },
		"firmware not ascii":     func(t *protocol.Telemetry) { t.Firmware = "1.0\u00a0" },
		"too many reasons":       func(t *protocol.Telemetry) { t.Reasons = many },
		"reason long":            func(t *protocol.Telemetry) { t.Reasons = []string{strings.Repeat("a", protocol.MaxReasonBytes+1)} },
		"reason empty":           func(t *protocol.Telemetry) { t.Reasons = []string{""} },
		"reason not a token":     func(t *protocol.Telemetry) { t.Reasons = []string{"door open"} },
		"reason upper case":      func(t *protocol.Telemetry) { t.Reasons = []string{"DOOR_OPEN"} },
		"kiosk_id still checked": func(t *protocol.Telemetry) { t.KioskID = "" },
	} {
		t.Run(name, func(t *testing.T) {
			tm := realHeartbeat()
			edit(&tm)
			b, _ := json.Marshal(tm)
			_, err := protocol.DecodeTelemetry(b)
			checkCode(t, err, protocol.CodeInvalidRequest)
			if len(err.Error()) > 200 || strings.Contains(err.Error(), "PPPP") {
				t.Errorf("the error carries the value: %.300s", err)
			}
		})
	}
	// The limits themselves are taken.
	tm := realHeartbeat()
	tm.LastError, tm.Firmware = strings.Repeat("e", protocol.MaxTelemetryText), strings.Repeat("f", protocol.MaxTelemetryText)
	tm.Reasons = many[:protocol.MaxTelemetryReasons]
	tm.Reasons[0] = strings.Repeat("a", protocol.MaxReasonBytes)
	b, _ := json.Marshal(tm)
	if _, err := protocol.DecodeTelemetry(b); err != nil {
		t.Fatalf("a heartbeat at the limits: %v", err)
	}
}

// README.md's Telemetry section lists every state a heartbeat may report.
func TestREADMEListsTelemetryStates(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "### Telemetry")
	if !ok {
		t.Fatal("README.md has no Telemetry section")
	}
	section, _, _ = strings.Cut(section, "\n### ")
	for field, states := range map[string][]string{"paper": protocol.TelemetryPaper, "printer": protocol.TelemetryPrinter, "scale": protocol.TelemetryScale} {
		for _, s := range states {
			if !strings.Contains(section, "`"+s+"`") {
				t.Errorf("README.md's Telemetry section does not list %s `%s`", field, s)
			}
		}
	}
}
