package fleet_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/fleet"
)

// FuzzHeartbeatNote: a notification from another hub decodes to a
// heartbeat with a hub, a time and valid telemetry, or is refused; it
// never panics.
func FuzzHeartbeatNote(f *testing.F) {
	tele := `{"kiosk_id":"kiosk-1","at":"2026-12-04T10:00:00Z","firmware":"1","uptime_s":5,"labels_left":9,"paper":"ok","printer":"ok","scale":"ok","sales":3,"in_service":true}`
	f.Add(`{"hub":"hub-a","at":1764842400000000,"telemetry":` + tele + `}`)
	f.Add(`{"hub":"","at":1,"telemetry":{}}`)
	f.Add(`{"hub":"hub-a","at":-1,"telemetry":null}`)
	f.Add(`not json`)
	f.Fuzz(func(t *testing.T, payload string) {
		hb, err := fleet.DecodeHeartbeatNote(payload)
		if err != nil {
			return
		}
		if hb.Hub == "" || !hb.At.After(time.Unix(0, 0)) || hb.Telemetry == nil || hb.Telemetry.KioskID == "" {
			t.Fatalf("accepted %q as %+v", payload, hb)
		}
		if _, err := json.Marshal(hb.Telemetry); err != nil {
			t.Fatal(err)
		}
	})
}
