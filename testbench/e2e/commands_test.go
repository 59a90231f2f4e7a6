package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/wait"
)

// kioskStatus reads the kiosk's own status, as its touchscreen does.
func kioskStatus(t *testing.T, w *webSystem) (reasons []string, message string) {
	t.Helper()
	resp, err := http.Get(w.KioskURL() + "/api/v1/status")
	if err != nil {
		return nil, ""
	}
	defer resp.Body.Close()
	var st struct {
		Reasons []string `json:"reasons"`
		Message string   `json:"message"`
	}
	json.NewDecoder(resp.Body).Decode(&st)
	return st.Reasons, st.Message
}

// Ops act on a running kiosk (the real binaries) from the console's
// buttons, the operator API and `hub kiosk command`: out of service and
// back, diagnostics that appear in the console, a lock that the kiosk and
// the hub both enforce, and a restart.
func TestFleetCommands(t *testing.T) {
	w := startWeb(t, 1)
	const kiosk, login = "demo-kiosk", "olga-ops"
	w.addOperator(login, "ops", "")
	p := openPage(t, w.HubURL(), "/console/login", w.Fingerprint())
	p.consoleLogin(login)
	page := "/console/kiosks/" + kiosk
	press := func(action, message string) {
		t.Helper()
		if got := p.open(page); got != http.StatusOK {
			t.Fatalf("%s: %d", page, got)
		}
		steps := []chromedp.Action[chromedp.Void]{chromedp.WaitVisible(chromedp.CSS("#command-" + action))}
		if message != "" {
			steps = append(steps, chromedp.SendKeys(chromedp.CSS("#command-message"), message))
		}
		p.do("press "+action, append(steps, chromedp.Click(chromedp.CSS("#command-"+action)))...)
		p.wait("the flash after "+action, `(document.getElementById("flash") || {}).innerText || ""`,
			func(v string) bool { return strings.Contains(v, "Sent: "+action) }, 15*time.Second)
	}
	held := func(reason string) func() bool {
		return func() bool { r, _ := kioskStatus(t, w); return slices.Contains(r, reason) }
	}

	// Out of service from the console, with a message for the screen.
	press(protocol.ActionOutOfService, "Back at 2 pm")
	wait.For(t, 20*time.Second, "the kiosk out of service", held("ops_out_of_service"))
	if _, msg := kioskStatus(t, w); msg != "Back at 2 pm" {
		t.Fatalf("the screen's message: %q", msg)
	}
	if status, rc := sell(t, w.Demo, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_approve")}); status == http.StatusOK || rc.Error == nil || rc.Error.Code != protocol.CodeServiceUnavailable {
		t.Fatalf("a sale while out of service: %d %+v", status, rc)
	}
	press(protocol.ActionInService, "")
	wait.For(t, 20*time.Second, "the kiosk back in service", func() bool { return !held("ops_out_of_service")() })
	if status, rc := sell(t, w.Demo, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_approve")}); status != http.StatusOK {
		t.Fatalf("a sale back in service: %d %+v", status, rc)
	}

	// Diagnostics: the kiosk's versions, devices and recent log, in the console.
	press(protocol.ActionDiagnostics, "")
	wait.Until(t, 20*time.Second, "diagnostics in the console", func() error {
		p.open(page)
		if !strings.Contains(p.text("#diagnostics-log"), "kiosk running") {
			return fmt.Errorf("commands: %q", p.text("#commands"))
		}
		return nil
	})
	if got := p.text("#diagnostics"); !strings.Contains(got, "Printer ok") || !strings.Contains(got, "Firmware") {
		t.Errorf("diagnostics shown: %q", got)
	}
	if got := p.text("#command-list"); !strings.Contains(got, login) || !strings.Contains(got, protocol.ActionOutOfService) {
		t.Errorf("the command list does not say who gave what: %q", got)
	}

	// A lock from the CLI: the kiosk stops and refuses staff; the console says so.
	out, err := w.Hub("kiosk", "command", kiosk, protocol.ActionLock, "--message", "Call ops on 555-0100", "--wait", "60s")
	if err != nil || !strings.HasPrefix(strings.TrimSpace(out[strings.Index(out, "\n")+1:]), "ok:") {
		t.Fatalf("hub kiosk command lock: %v\n%s", err, out)
	}
	wait.For(t, 10*time.Second, "the kiosk locked", held("locked"))
	resp, err := http.Post(w.KioskURL()+"/api/v1/staff/login", "application/json", strings.NewReader(`{"pin":"1234"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusLocked {
		t.Fatalf("staff login on a locked kiosk: %s", resp.Status)
	}
	if status, rc := sell(t, w.Demo, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_approve")}); status == http.StatusOK {
		t.Fatalf("a sale while locked: %d %+v", status, rc)
	}
	p.open(page)
	if got := p.text("#locked"); !strings.Contains(got, "locked") {
		t.Fatalf("the console does not show the lock: %q", p.text(".card"))
	}

	// Unlock through the operator API.
	token := strings.TrimSpace(w.hub(nil, "operator", "token", login, "--name", "e2e", "--write"))
	api := func(method, path string, body any) (int, []byte) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequestWithContext(t.Context(), method, w.HubURL()+"/api/v1/ops"+path, rd)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := w.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	status, b := api("POST", "/fleet/"+kiosk+"/commands", map[string]string{"action": protocol.ActionUnlock})
	var cmd struct {
		CommandID string `json:"command_id"`
		Status    string `json:"status"`
		IssuedBy  string `json:"issued_by"`
	}
	if err := json.Unmarshal(b, &cmd); status != http.StatusAccepted || err != nil || cmd.IssuedBy != login {
		t.Fatalf("POST commands: %d %s", status, b)
	}
	wait.For(t, 20*time.Second, "the unlock answered", func() bool {
		_, b := api("GET", "/commands/"+cmd.CommandID, nil)
		return json.Unmarshal(b, &cmd) == nil && cmd.Status == "ok"
	})
	wait.For(t, 10*time.Second, "the kiosk unlocked", func() bool { return !held("locked")() })
	if status, rc := sell(t, w.Demo, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_approve")}); status != http.StatusOK {
		t.Fatalf("a sale after the unlock: %d %+v", status, rc)
	}
	if status, b := api("POST", "/fleet/"+kiosk+"/commands", map[string]string{"action": "explode"}); status != http.StatusBadRequest {
		t.Fatalf("an unknown action: %d %s", status, b)
	}
	if status, b := api("POST", "/fleet/nobody/commands", map[string]string{"action": protocol.ActionRestart}); status != http.StatusNotFound {
		t.Fatalf("an unknown kiosk: %d %s", status, b)
	}

	// Restart: the kiosk ends with the restart status, for systemd to
	// start it again, and comes back selling.
	if out, err := w.Hub("kiosk", "command", kiosk, protocol.ActionRestart, "--wait", "60s"); err != nil {
		t.Fatalf("hub kiosk command restart: %v\n%s", err, out)
	}
	select {
	case <-w.KioskExited():
	case <-time.After(20 * time.Second):
		t.Fatal("the kiosk did not restart")
	}
	if err := w.RestartKiosk(t.Context()); err != nil {
		t.Fatal(err)
	}
	if status, rc := sell(t, w.Demo, map[string]any{"rate_class": "1100", "weight_mg": 20_000, "payment": card("tok_approve")}); status != http.StatusOK {
		t.Fatalf("a sale after the restart: %d %+v", status, rc)
	}
	ledgerOK(t, w.Demo)
}

// A store's staff managed centrally on the real binaries: a member added
// in the console opens staff mode at the kiosk (and the kiosk's own PIN no
// longer does); revoked from the command line, their PIN is refused at the
// kiosk within a minute and their session ends. The kiosk takes the
// store's settings too.
func TestCentralStaffRevoked(t *testing.T) {
	w := startWeb(t, 1)
	const login = "otto-ops"
	w.addOperator(login, "ops", "")
	p := openPage(t, w.HubURL(), "/console/login", w.Fingerprint())
	p.consoleLogin(login)
	store := "demo-store" // demo.Config's default
	staffLogin := func(pin string) (int, string) {
		resp, err := http.Post(w.KioskURL()+"/api/v1/staff/login", "application/json", strings.NewReader(`{"pin":"`+pin+`"}`))
		if err != nil {
			return 0, ""
		}
		defer resp.Body.Close()
		var out struct{ Token string }
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out.Token
	}
	live := func(token string) bool {
		req, _ := http.NewRequest("GET", w.KioskURL()+"/api/v1/staff/counters", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	if st, _ := staffLogin(demo.StaffPIN); st != http.StatusOK {
		t.Fatalf("the kiosk's own PIN: %d", st)
	}

	if got := p.open("/console/stores/" + store); got != http.StatusOK {
		t.Fatalf("the store's page: %d", got)
	}
	p.do("add alice", chromedp.WaitVisible(chromedp.CSS("#staff-name")),
		chromedp.SendKeys(chromedp.CSS("#staff-name"), "alice"),
		chromedp.SendKeys(chromedp.CSS("#staff-pin"), "135790"),
		chromedp.Click(chromedp.CSS("#add-staff")))
	p.wait("alice listed", `(document.getElementById("staff-list") || {}).innerText || ""`,
		func(v string) bool { return strings.Contains(v, "alice") && strings.Contains(v, "active") }, 15*time.Second)
	p.do("set the idle timeout", chromedp.SendKeys(chromedp.CSS("#idle_timeout_s"), "45"), chromedp.Click(chromedp.CSS("#save-settings")))
	p.wait("the settings saved", `(document.getElementById("flash") || {}).innerText || ""`,
		func(v string) bool { return strings.Contains(v, "Settings saved") }, 15*time.Second)

	var token string
	wait.For(t, 30*time.Second, "alice's PIN opening staff mode", func() bool {
		var st int
		st, token = staffLogin("135790")
		return st == http.StatusOK
	})
	if st, _ := staffLogin(demo.StaffPIN); st != http.StatusUnauthorized {
		t.Fatalf("the kiosk's own PIN once the store's staff are managed centrally: %d", st)
	}
	wait.For(t, 30*time.Second, "the store's idle timeout at the kiosk", func() bool {
		resp, err := http.Get(w.KioskURL() + "/api/v1/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st struct {
			IdleTimeoutS int `json:"idle_timeout_s"`
		}
		return json.NewDecoder(resp.Body).Decode(&st) == nil && st.IdleTimeoutS == 45
	})

	start := time.Now()
	if out, err := w.Hub("staff", "revoke", store, "alice"); err != nil {
		t.Fatalf("hub staff revoke: %v\n%s", err, out)
	}
	wait.For(t, time.Minute, "alice's session ended at the kiosk", func() bool { return !live(token) })
	if st, _ := staffLogin("135790"); st != http.StatusUnauthorized {
		t.Fatalf("alice's PIN after her revocation: %d", st)
	}
	t.Logf("revoked at the kiosk %v after hub staff revoke", time.Since(start).Round(time.Millisecond))
	if out, err := w.Hub("staff", "list", store); err != nil || !strings.Contains(out, "revoked") || !strings.Contains(out, "otto-ops") {
		t.Fatalf("hub staff list: %v\n%s", err, out)
	}
}
