package hub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
	hubpostal "github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/verify"
	"github.com/frank-postage/frank/testbench/wait"
)

// A key rotated while the hub runs signs the next stamps without a
// restart; stamps of the old key still verify. A key marked compromised
// is published as such (the active one is rotated away first), and the
// verifier flags stamps it signed from that day on.
func TestKeyRotationWithoutRestart(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.KeyCheckEvery = 10 * time.Millisecond })
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	sell := func(id, label string) []byte {
		t.Helper()
		res := decode(t, k.ask(purchase(id, "kiosk-1", label, nil)))
		if res.Status != protocol.ResultOK {
			t.Fatalf("sale %s: %+v", id, res.Error)
		}
		return res.Indicia[0].Matrix
	}
	keys := func() verify.Keys {
		t.Helper()
		resp, err := http.Get("http://" + e.h.HTTPAddr + "/api/v1/certificates")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var certs []verify.Certificate
		if err := json.NewDecoder(resp.Body).Decode(&certs); err != nil {
			t.Fatal(err)
		}
		ks, err := verify.KeysOf(certs, nil)
		if err != nil {
			t.Fatal(err)
		}
		return ks
	}
	signedBy := func(m []byte) uint32 {
		t.Helper()
		in, err := keys().Verify(m)
		if err != nil {
			t.Fatal(err)
		}
		return in.CertSerial
	}
	first := sell("rot-1", "1966-F8CF-01")
	if signedBy(first) != 1 {
		t.Fatal("the first stamp is not signed with key 1")
	}
	if _, err := e.h.Keys().Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "workers on key 2", func() bool { return e.h.Pool().Key().CertSerial == 2 })
	second := sell("rot-2", "1966-F8CF-02")
	if signedBy(second) != 2 || signedBy(first) != 1 {
		t.Fatal("after the rotation: not key 2, or the old stamp no longer verifies")
	}
	// Key 1 compromised since yesterday: its stamp of today is flagged,
	// key 2's is not.
	if err := e.h.Keys().Compromise(ctx, 1, e.clock.Now().Add(-24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	ks := keys()
	for m, want := range map[*[]byte]bool{&first: true, &second: false} {
		in, err := ks.Verify(*m)
		var ce *verify.CompromisedError
		if errors.As(err, &ce) { // Verify refuses it itself
			in = ce.Indicium
		} else if err != nil {
			t.Fatal(err)
		}
		if _, bad := ks.CompromisedSigner(in); bad != want || (ce != nil) != want {
			t.Errorf("stamp of key %d: compromised %v, want %v", in.CertSerial, bad, want)
		}
	}
	// The active key compromised: rotated away first, and the hub follows.
	if err := e.h.Keys().Compromise(ctx, 2, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "workers on key 3", func() bool { return e.h.Pool().Key().CertSerial == 3 })
	if signedBy(sell("rot-3", "1966-F8CF-03")) != 3 {
		t.Fatal("after compromising the active key: not key 3")
	}
	e.check()
}

// The control-code key is rotated under a running hub: every PSD row is
// resealed under the new key in one transaction, the audit chain records
// each reseal, sales go on, the ledger check passes, and a row edited
// afterwards is still caught.
func TestControlKeyRotation(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.KeyCheckEvery = 10 * time.Millisecond })
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	if res := decode(t, k.ask(purchase("mac-1", "kiosk-1", "1966-F8CF-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("sale: %+v", res.Error)
	}
	gen, err := e.h.RotateControlKey(ctx)
	if err != nil || gen != 2 || e.h.Ledger().ControlKeyGen() != 2 {
		t.Fatalf("rotate: gen %d, %v", gen, err)
	}
	if res := decode(t, k.ask(purchase("mac-2", "kiosk-1", "1966-F8CF-02", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("sale after the rotation: %+v", res.Error)
	}
	e.check()
	db := e.openDB()
	var old, rekeys int
	db.QueryRow(`SELECT COUNT(*) FROM psd WHERE length(control) = 32`).Scan(&old)
	db.QueryRow(`SELECT COUNT(*) FROM audit WHERE kind = 'rekey'`).Scan(&rekeys)
	if old != 0 || rekeys < 2 {
		t.Fatalf("%d rows still under the first key, %d reseals in the audit chain", old, rekeys)
	}
	if _, err := db.Exec(`UPDATE psd SET dr = dr + 1000 WHERE kind = 'gpsd'`); err != nil {
		t.Fatal(err)
	}
	r, err := e.h.Ledger().Check(ctx)
	if err != nil || r.OK() {
		t.Fatalf("an edited row after the rotation passed the check: %v", err)
	}
}

// A key compromised since a day of a period already reported is told to
// the authority in the report of the period it was declared in, once,
// with the day its stamps are void from; the authority accepts it.
func TestCompromiseReportedWhenDeclared(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	declared := e.clock.Now()
	since := declared.Add(-40 * 24 * time.Hour)
	if err := e.h.Keys().Compromise(ctx, 1, since); err != nil {
		t.Fatal(err)
	}
	if e.h.Pool().Key().CertSerial == 1 {
		if active, err := e.h.Keys().Active(ctx); err != nil || active.CertSerial == 1 {
			t.Fatalf("the compromised key is still the active one: %+v, %v", active, err)
		}
	}
	events := func(from, to time.Time) []hubpostal.Event {
		t.Helper()
		rep, err := e.h.Ledger().BuildReport(ctx, from, to)
		if err != nil {
			t.Fatal(err)
		}
		var out []hubpostal.Event
		for _, ev := range rep.Events {
			if ev.Kind == hubpostal.EventKeyCompromised {
				out = append(out, ev)
			}
		}
		return out
	}
	if ev := events(since.Add(-time.Hour), since.Add(24*time.Hour)); len(ev) != 0 {
		t.Fatalf("the void day's period, reported before the declaration: %+v", ev)
	}
	from, to := declared.Add(-time.Hour), declared.Add(time.Hour)
	e.clock.Set(to) // the period has ended
	ev := events(from, to)
	if len(ev) != 1 || ev[0].Subject != "key/1" || !strings.Contains(ev[0].Detail, "dated "+protocol.CompromiseDate(since).String()+" or later") {
		t.Fatalf("the declaration's period: %+v", ev)
	}
	rep, err := e.h.Ledger().BuildReport(ctx, from, to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.h.Ledger().SubmitReport(ctx, rep, e.h.Postal()); err != nil {
		t.Fatalf("the authority refused the report: %v", err)
	}
	// Declared again a day on with a later time: nothing changes. With an
	// earlier void day: reported again, with that day.
	e.clock.Set(declared.Add(24 * time.Hour))
	if err := e.h.Keys().Compromise(ctx, 1, since.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if ev := events(to, e.clock.Now()); len(ev) != 0 {
		t.Fatalf("declared again, later: reported again %+v", ev)
	}
	if err := e.h.Keys().Compromise(ctx, 1, since.Add(-24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	e.clock.Set(e.clock.Now().Add(time.Second))
	if ev := events(to, e.clock.Now()); len(ev) != 1 || !strings.Contains(ev[0].Detail, "dated "+protocol.CompromiseDate(since.Add(-24*time.Hour)).String()+" or later") {
		t.Fatalf("declared again, earlier: %+v", ev)
	}
}

// A hub that cannot load the active signing key (one made in another
// hub's HSM) signs nothing rather than go on with the retired key, whose
// stamps verifiers refuse once dated past its retirement: sales get
// service_unavailable until the key loads, and sell again after.
func TestHubWithoutTheActiveKeySignsNothing(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.KeyCheckEvery = 10 * time.Millisecond })
	k := e.kiosk("kiosk-1")
	if res := decode(t, k.ask(purchase("nokey-1", "kiosk-1", "1966-F8CF-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("sale: %+v", res.Error)
	}
	db := e.openDB()
	now := e.clock.Now().UnixMicro()
	for _, q := range []string{
		fmt.Sprintf(`UPDATE signing_keys SET retired_at = %d`, now),
		fmt.Sprintf(`INSERT INTO signing_keys (cert_serial, key_label, public_key_pem, certificate_pem, created_at)
			SELECT 9, 'indicium-in-another-hsm', public_key_pem, '', %d FROM signing_keys WHERE cert_serial = 1`, now),
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 10*time.Second, "the pool without a key", func() bool { return e.h.Pool().Key().CertSerial == 0 })
	res := decode(t, k.ask(purchase("nokey-2", "kiosk-1", "1966-F8CF-02", nil)))
	if res.Status == protocol.ResultOK || res.Error.Code != protocol.CodeServiceUnavailable {
		t.Fatalf("a sale with no key loaded: %+v", res)
	}
	for _, q := range []string{`DELETE FROM signing_keys WHERE cert_serial = 9`, `UPDATE signing_keys SET retired_at = NULL WHERE cert_serial = 1`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 10*time.Second, "the pool on key 1 again", func() bool { return e.h.Pool().Key().CertSerial == 1 })
	if res := decode(t, k.ask(purchase("nokey-3", "kiosk-1", "1966-F8CF-03", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("a sale once the key loads: %+v", res.Error)
	}
	e.check()
}

// A compromise whose rotation is cut short (the authority out of reach for
// the new key, or the process killed in between) leaves the compromised key
// active. Its stamps would be void, though paid for: the hubs sign nothing
// with it, after a restart too, until the leader has registered a new key.
func TestCompromiseCutShortSignsNothing(t *testing.T) {
	var down atomic.Bool
	e := newEnvWith(t, func(c *hub.Config) {
		c.KeyCheckEvery = 10 * time.Millisecond
		c.PostalURL = faultyProxy(t, c.PostalURL, func(*http.Request) bool { return down.Load() })
	})
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	if res := decode(t, k.ask(purchase("before", "kiosk-1", "1966-F8CF-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("sale before: %+v", res.Error)
	}
	down.Store(true)
	if err := e.h.Keys().Compromise(ctx, 1, e.clock.Now().Add(-time.Hour)); err == nil {
		t.Fatal("a compromise whose new key was not registered said nothing")
	}
	refused := func(id, label string) {
		t.Helper()
		res := decode(t, k.ask(purchase(id, "kiosk-1", label, nil)))
		if res.Status == protocol.ResultOK || res.Error.Code != protocol.CodeServiceUnavailable {
			t.Fatalf("sale %s on a compromised key: %+v %+v", id, res, res.Error)
		}
	}
	wait.For(t, 10*time.Second, "the running hub to stop signing", func() bool { return e.h.Pool().Key().CertSerial == 0 })
	refused("during", "1966-F8CF-02")

	// A restart with the authority still down: the hub starts, and signs
	// nothing; so it does once ops have deleted the compromised key.
	e.h.Close()
	e.start()
	k = e.kiosk("kiosk-1")
	refused("restarted", "1966-F8CF-03")
	all, err := e.h.Keys().All(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.h.Close()
	if err := os.Remove(filepath.Join(e.cfg.DataDir, "keys", all[0].Label+".key.json")); err != nil {
		t.Fatal(err)
	}
	e.start()
	k = e.kiosk("kiosk-1")
	refused("key-deleted", "1966-F8CF-03")

	// The authority answers again: the leader's round finishes the rotation.
	down.Store(false)
	e.h.Round()
	res := decode(t, k.ask(purchase("after", "kiosk-1", "1966-F8CF-04", nil)))
	if res.Status != protocol.ResultOK {
		t.Fatalf("sale after the rotation: %+v", res.Error)
	}
	ks, err := verify.FetchKeys(ctx, "http://"+e.h.HTTPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	in, err := ks.Verify(res.Indicia[0].Matrix)
	if err != nil {
		t.Fatal(err)
	}
	if _, void := ks.CompromisedSigner(in); void || in.CertSerial == 1 {
		t.Fatalf("stamp signed by key %d, void %t", in.CertSerial, void)
	}
	if tot := e.cards.Totals(); tot.Open != 0 {
		wait.For(t, 10*time.Second, "no hold left open", func() bool { return e.cards.Totals().Open == 0 })
	}
}

// A hub started on another HSM than the one its database was sealed with
// (a wrong token or slot, or an empty key store) refuses to start: it made
// a new control-code key, failed every PSD's seal, and stopped all sales
// with a false tamper alert.
func TestHubOnAnotherHSMRefusesToStart(t *testing.T) {
	t.Parallel()
	dsn := peersDB(t)
	e := newEnvWith(t, func(c *hub.Config) { c.DB = dsn })
	if res := decode(t, e.kiosk("kiosk-1").ask(purchase("hsm-1", "kiosk-1", "1966-F8CF-01", nil))); res.Status != protocol.ResultOK {
		t.Fatalf("sale: %+v", res.Error)
	}
	cfg := e.cfg
	cfg.DataDir = t.TempDir() // its soft key store: empty
	h, err := hub.Open(context.Background(), cfg, quietLog())
	if h != nil {
		h.Close()
	}
	if !errors.Is(err, hub.ErrWrongHSM) {
		t.Fatalf("a hub on an empty key store: %v; want ErrWrongHSM", err)
	}
	if as, err := e.h.Alerts().List(context.Background(), true); err != nil || len(as) != 0 {
		t.Fatalf("alerts %+v (%v)", as, err)
	}
}
