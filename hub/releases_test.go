package hub_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/hub/releases"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// A rollout offers a signed release to its canary, waits to be widened,
// offers it to the rest, and halts by itself when a share of the kiosks
// offered it larger than its threshold fail, with an alert.
func TestRolloutHaltsAtItsThreshold(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	bin := bytes.Repeat([]byte("kiosk 2.0.0 "), 1000)
	sum := sha256.Sum256(bin)
	manifest, _ := json.Marshal(protocol.ReleaseManifest{Version: "2.0.0", Created: time.Now().UTC(),
		Artifacts: []protocol.Artifact{{Arch: "arm64", Size: int64(len(bin)), SHA256: hex.EncodeToString(sum[:])}}})
	sig := ed25519.Sign(priv, manifest)
	rs := e.h.Releases()
	if _, err := rs.Publish(ctx, pub, manifest, sig, map[string][]byte{"arm64": []byte("another binary")}, "ann"); err == nil {
		t.Fatal("a release whose binary is not the signed one was published")
	}
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := rs.Publish(ctx, other, manifest, sig, map[string][]byte{"arm64": bin}, "ann"); err == nil {
		t.Fatal("a release that does not verify with the release key was published")
	}
	if _, err := rs.Publish(ctx, pub, manifest, sig, map[string][]byte{"arm64": bin}, "ann"); err != nil {
		t.Fatal(err)
	}
	// Kiosks download it resumably.
	req, _ := http.NewRequest("GET", "http://"+e.h.HTTPAddr+releases.Path+"/2.0.0/arm64", nil)
	req.Header.Set("Range", "bytes=100-")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, bin[100:]) {
		t.Fatalf("ranged download: %s, %d bytes", resp.Status, len(got))
	}

	k1, k2 := e.kiosk("kiosk-1"), e.kiosk("kiosk-2")
	c1, c2 := k1.commandsOf(t), k2.commandsOf(t)
	answer := func(k *kioskClient, c protocol.Command, res protocol.CommandResult) {
		res.CommandID, res.KioskID, res.At = c.CommandID, k.id, time.Now().UTC()
		b, _ := json.Marshal(res)
		k.c.Publish(protocol.KioskTopic(k.id, protocol.TopicCommandResult), 1, false, b).WaitTimeout(5 * time.Second)
	}
	ro, err := rs.Start(ctx, "2.0.0", []releases.Stage{{Kiosks: []string{"kiosk-1"}}}, 20, 0, time.Minute, "ann")
	if err != nil {
		t.Fatal(err)
	}
	e.h.Round() // the leader's round offers it, rather than in up to a sixth of the lease
	cmd := nextCommand(t, c1)
	if cmd.Action != protocol.ActionUpdate || cmd.Release == nil || cmd.Release.Path != releases.Path+"/2.0.0" {
		t.Fatalf("offer %+v", cmd)
	}
	if m, err := protocol.VerifyRelease(pub, cmd.Release.Manifest, cmd.Release.Signature); err != nil || m.Version != "2.0.0" {
		t.Fatalf("the offer does not verify: %v", err)
	}
	answer(k1, cmd, protocol.CommandResult{Status: protocol.ResultOK, Firmware: "2.0.0"})
	waitRollout := func(what string, ok func(*releases.Rollout) bool) *releases.Rollout {
		t.Helper()
		var r *releases.Rollout
		wait.Until(t, 20*time.Second, "the rollout "+what, func() error {
			e.h.Round()
			var err error
			if r, err = rs.Get(ctx, ro.ID); err == nil && !ok(r) {
				err = fmt.Errorf("it is %+v", r)
			}
			return err
		})
		return r
	}
	waitRollout("healthy on its canary", func(r *releases.Rollout) bool { return r.Healthy == 1 && r.Pending == 0 && r.Stage == 0 })
	select {
	case c := <-c2:
		t.Fatalf("kiosk-2 offered the release before the rollout widened: %+v", c)
	default:
	}
	if err := rs.Widen(ctx, ro.ID); err != nil {
		t.Fatal(err)
	}
	e.h.Round()
	cmd = nextCommand(t, c2)
	answer(k2, cmd, protocol.CommandResult{Status: protocol.ResultRejected, Firmware: "1.0.0",
		Error: protocol.Errorf(protocol.CodeUpdateFailed, "release 2.0.0 was rolled back to 1.0.0: no health check passed by its deadline")})
	met.Store(protocol.CodeUpdateFailed, true)
	r := waitRollout("halted", func(r *releases.Rollout) bool { return r.State == releases.Halted })
	if r.Failed != 1 || r.Healthy != 1 {
		t.Fatalf("halted rollout %+v", r)
	}
	open, _ := e.h.Alerts().List(ctx, true)
	if !slices.ContainsFunc(open, func(a alerts.Alert) bool { return a.Kind == alerts.RolloutHalted }) {
		t.Fatalf("no rollout_halted alert: %+v", open)
	}
	if err := rs.Widen(ctx, ro.ID); err == nil {
		t.Fatal("a halted rollout widened")
	}
}

// publish signs a release of a small binary for arm64 with a new release
// key and publishes it.
func (e *env) publish(version string) {
	e.t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	bin := []byte("kiosk " + version)
	sum := sha256.Sum256(bin)
	manifest, _ := json.Marshal(protocol.ReleaseManifest{Version: version, Created: time.Now().UTC(),
		Artifacts: []protocol.Artifact{{Arch: "arm64", Size: int64(len(bin)), SHA256: hex.EncodeToString(sum[:])}}})
	if _, err := e.h.Releases().Publish(context.Background(), pub, manifest, ed25519.Sign(priv, manifest), map[string][]byte{"arm64": bin}, "ann"); err != nil {
		e.t.Fatal(err)
	}
}

// updated answers an update command: the kiosk runs version and is healthy.
func (k *kioskClient) updated(c protocol.Command, version string) {
	b, _ := json.Marshal(protocol.CommandResult{CommandID: c.CommandID, KioskID: k.id, Status: protocol.ResultOK, Firmware: version, At: time.Now().UTC()})
	k.c.Publish(protocol.KioskTopic(k.id, protocol.TopicCommandResult), 1, false, b).WaitTimeout(5 * time.Second)
}

// A rollout with a soak widens by itself once its stage is all healthy
// and the soak has passed, and ends when the whole fleet is healthy.
func TestRolloutWidensAfterItsSoak(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.publish("2.1.0")
	rs := e.h.Releases()
	k1, k2 := e.kiosk("kiosk-1"), e.kiosk("kiosk-2")
	c1, c2 := k1.commandsOf(t), k2.commandsOf(t)
	ok := func(k *kioskClient, c protocol.Command) { k.updated(c, "2.1.0") }
	ro, err := rs.Start(ctx, "2.1.0", []releases.Stage{{Stores: []string{"store-a"}}}, 0, time.Minute, time.Minute, "ann")
	if err != nil {
		t.Fatal(err)
	}
	e.h.Round() // the leader's round offers it, rather than in up to a sixth of the lease
	ok(k1, nextCommand(t, c1))
	wait.For(t, 20*time.Second, "the canary's answer counted", func() bool {
		e.h.Round()
		r, err := rs.Get(ctx, ro.ID)
		return err == nil && r.Healthy == 1
	})
	select {
	case c := <-c2:
		t.Fatalf("kiosk-2 offered the release before the soak passed: %+v", c)
	default:
	}
	e.clock.Set(e.clock.Now().Add(61 * time.Second)) // the soak passes
	e.h.Round()                                      // the leader widens the rollout
	e.h.Round()                                      // and offers the next stage
	ok(k2, nextCommand(t, c2))                       // offered by itself
	wait.Until(t, 30*time.Second, "the rollout done with 2 healthy", func() error {
		e.h.Round()
		r, err := rs.Get(ctx, ro.ID)
		if err == nil && (r.State != releases.Done || r.Healthy != 2) {
			err = fmt.Errorf("it is %+v", r)
		}
		return err
	})
}

// Ops widen and abort a running rollout from the console and the operator
// API; store staff cannot, the whole fleet's stage has no next one, and an
// aborted rollout's offers not yet taken expire.
func TestRolloutWidenedAndAbortedByOps(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.publish("2.2.0")
	rs := e.h.Releases()
	k1, k2 := e.kiosk("kiosk-1"), e.kiosk("kiosk-2")
	c1, c2 := k1.commandsOf(t), k2.commandsOf(t)
	ro, err := rs.Start(ctx, "2.2.0", []releases.Stage{{Kiosks: []string{"kiosk-1"}}}, 50, 0, time.Minute, "ann")
	if err != nil {
		t.Fatal(err)
	}
	e.h.Round()
	first := nextCommand(t, c1)
	k1.updated(first, "2.2.0")

	token := func(login, role string, stores ...string) string {
		t.Helper()
		if _, err := e.h.Operators().Add(ctx, login, "operator password 1", role, stores); err != nil {
			t.Fatal(err)
		}
		tok, err := e.h.Operators().NewToken(ctx, login, "rollout test", operators.ReadWrite, operators.DefaultTokenTTL)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	api := func(tok, path string) (int, string) {
		t.Helper()
		st, _, body := e.browser().do("POST", "/api/v1/ops/rollouts/"+path, nil, "Authorization", "Bearer "+tok)
		return st, body
	}
	ops, staff := token("ola-ops", "ops"), token("sam-staff", "staff", "store-a")
	if st, body := api(staff, fmt.Sprint(ro.ID, "/widen")); st != http.StatusForbidden {
		t.Fatalf("store staff widened a rollout: %d %s", st, body)
	}
	if st, body := api(ops, "99/widen"); st != http.StatusNotFound || !strings.Contains(body, `"not_found"`) {
		t.Fatalf("widen an unknown rollout: %d %s", st, body)
	}
	st, body := api(ops, fmt.Sprint(ro.ID, "/widen"))
	var got releases.Rollout
	if err := json.Unmarshal([]byte(body), &got); st != http.StatusOK || err != nil || got.Stage != 1 || got.State != releases.Running {
		t.Fatalf("widen by the operator API: %d %s", st, body)
	}
	e.h.Round()
	offer := nextCommand(t, c2) // the whole fleet's stage reaches kiosk-2
	if st, body := api(ops, fmt.Sprint(ro.ID, "/widen")); st != http.StatusBadRequest || !strings.Contains(body, "whole fleet") {
		t.Fatalf("widen past the whole fleet: %d %s", st, body)
	}

	// The console: the running rollout has its buttons; abort it.
	con := e.operator("rita-ops", "ops")
	_, _, page := con.do("GET", "/console/rollouts", nil)
	if !strings.Contains(page, fmt.Sprintf(`id="abort-%d"`, ro.ID)) || !strings.Contains(page, fmt.Sprintf(`id="widen-%d" disabled`, ro.ID)) {
		t.Fatalf("the rollouts page has no abort button, or a widen button past the last stage:\n%s", page)
	}
	if st, _, _ := con.do("POST", fmt.Sprintf("/console/rollouts/%d/abort", ro.ID), url.Values{}); st != http.StatusForbidden {
		t.Fatalf("an abort without the CSRF token: %d", st)
	}
	st, loc, _ := con.post("/console/rollouts", fmt.Sprintf("/console/rollouts/%d/abort", ro.ID), url.Values{})
	if st != http.StatusSeeOther || !strings.Contains(loc, "aborted") {
		t.Fatalf("abort from the console: %d %s", st, loc)
	}
	r, err := rs.Get(ctx, ro.ID)
	if err != nil || r.State != releases.Aborted || r.Why != "aborted by rita-ops" {
		t.Fatalf("after the abort: %+v %v", r, err)
	}
	e.waitCommand(offer.CommandID, "expired") // kiosk-2 is no longer offered it
	if c := e.waitCommand(first.CommandID, "ok"); c.Result == nil || c.Result.Firmware != "2.2.0" {
		t.Fatalf("kiosk-1's update: %+v", c)
	}
	_, _, page = con.do("GET", "/console/rollouts", nil)
	if strings.Contains(page, fmt.Sprintf(`id="abort-%d"`, ro.ID)) {
		t.Fatal("an aborted rollout still has its buttons")
	}
	st, loc, _ = con.post("/console/rollouts", fmt.Sprintf("/console/rollouts/%d/abort", ro.ID), url.Values{})
	if st != http.StatusSeeOther || !strings.Contains(loc, "Not+done") {
		t.Fatalf("abort an aborted rollout: %d %s", st, loc)
	}
}
