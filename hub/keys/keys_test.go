package keys_test

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/frank-postage/frank/hsm/soft"
	"github.com/frank-postage/frank/hub/keys"
	"github.com/frank-postage/frank/hub/postal"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// TestMain stops the PostgreSQL server the tests share.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// authority hands out serials like the postal authority. Each registration
// waits (up to window) for a second one to arrive, so two hubs that both
// decided to make a key are sure to overlap; one alone goes on after the
// window.
type authority struct {
	window time.Duration
	mu     sync.Mutex
	serial uint32
	calls  int
	second chan struct{}
}

func newAuthority(window time.Duration) *authority {
	return &authority{window: window, second: make(chan struct{})}
}

func (a *authority) RegisterKey(ctx context.Context, pub *ecdsa.PublicKey) (postal.Certificate, error) {
	p, err := postal.PublicKeyPEM(pub)
	if err != nil {
		return postal.Certificate{}, err
	}
	a.mu.Lock()
	a.calls++
	if a.calls == 2 {
		close(a.second)
	}
	a.mu.Unlock()
	select {
	case <-a.second:
	case <-time.After(a.window):
	case <-ctx.Done():
		return postal.Certificate{}, ctx.Err()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.serial++
	return postal.Certificate{Serial: a.serial, PublicKeyPEM: p}, nil
}

// hubs returns n key managers, each on its own connections to one
// database (as n hubs would be) and one key store.
func hubs(t *testing.T, dsn string, pa *authority, n int) []*keys.Keys {
	t.Helper()
	ks, err := soft.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	var out []*keys.Keys
	for range n {
		db, err := store.Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		out = append(out, keys.New(db, ks, pa, log, time.Now))
	}
	return out
}

// each runs f(i, k) for every k at once and waits for them.
func each(ks []*keys.Keys, f func(i int, k *keys.Keys)) {
	var wg sync.WaitGroup
	for i, k := range ks {
		wg.Go(func() { f(i, k) })
	}
	wg.Wait()
}

// Two hubs starting together on an empty database make one signing key
// between them, and both start on it.
func TestInitConcurrent(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		pa := newAuthority(500 * time.Millisecond)
		ks := hubs(t, dsn, pa, 2)
		got := make([]keys.Key, len(ks))
		errs := make([]error, len(ks))
		each(ks, func(i int, k *keys.Keys) { got[i], errs[i] = k.Init(ctx) })
		for i, err := range errs {
			if err != nil {
				t.Fatalf("hub %d: init: %v", i, err)
			}
		}
		all, err := ks[0].All(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 1 || pa.calls != 1 {
			t.Fatalf("%d keys recorded, %d registered; want one of each", len(all), pa.calls)
		}
		if got[0].CertSerial != all[0].CertSerial || got[1].CertSerial != all[0].CertSerial || got[0].Label != got[1].Label {
			t.Fatalf("the hubs started on keys %d (%s) and %d (%s), want both on %d",
				got[0].CertSerial, got[0].Label, got[1].CertSerial, got[1].Label, all[0].CertSerial)
		}
		// Started again, each finds the key and makes none.
		each(ks, func(i int, k *keys.Keys) { got[i], errs[i] = k.Init(ctx) })
		if errs[0] != nil || errs[1] != nil || got[0].CertSerial != all[0].CertSerial || got[1].CertSerial != all[0].CertSerial || pa.calls != 1 {
			t.Fatalf("second start: %+v %v, %+v %v, %d registrations", got[0], errs[0], got[1], errs[1], pa.calls)
		}
	})
}

// Two rotations at once leave one key active. (SQLite serializes the
// writes anyway; PostgreSQL, without the lock, keeps both new keys active.)
func TestRotateConcurrent(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		pa := newAuthority(500 * time.Millisecond)
		ks := hubs(t, dsn, pa, 2)
		if _, err := ks[0].Init(ctx); err != nil {
			t.Fatal(err)
		}
		pa.mu.Lock()
		pa.calls, pa.second = 0, make(chan struct{})
		pa.mu.Unlock()
		errs := make([]error, len(ks))
		each(ks, func(i int, k *keys.Keys) { _, errs[i] = k.Rotate(ctx) })
		for i, err := range errs {
			if err != nil {
				t.Fatalf("hub %d: rotate: %v", i, err)
			}
		}
		all, err := ks[0].All(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var active []uint32
		for _, k := range all {
			if k.Retired == nil {
				active = append(active, k.CertSerial)
			}
		}
		if len(all) != 3 || len(active) != 1 {
			t.Fatalf("%d keys, active %v; want 3 keys, one active", len(all), active)
		}
		if a, err := ks[1].Active(ctx); err != nil || a.CertSerial != active[0] {
			t.Fatalf("Active = %d, %v; want %d", a.CertSerial, err, active[0])
		}
	})
}

// lossy is an authority that certifies each public key once, under one
// serial however often it is asked, and loses its answer while lose is
// set: the hub cannot tell whether the key was certified.
type lossy struct {
	mu     sync.Mutex
	lose   bool
	serial map[string]uint32
}

func (a *lossy) RegisterKey(_ context.Context, pub *ecdsa.PublicKey) (postal.Certificate, error) {
	p, err := postal.PublicKeyPEM(pub)
	if err != nil {
		return postal.Certificate{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.serial[p] == 0 {
		a.serial[p] = uint32(len(a.serial) + 1)
	}
	if a.lose {
		return postal.Certificate{}, errors.New("the authority's answer was lost")
	}
	return postal.Certificate{Serial: a.serial[p], PublicKeyPEM: p, CertificatePEM: fmt.Sprintf("certificate %d", a.serial[p])}, nil
}

// lossyKeys is a key manager on dsn with its first key, before a lossy
// authority, which it returns with the database.
func lossyKeys(t *testing.T, dsn string) (*keys.Keys, *store.DB, *lossy, keys.Key) {
	t.Helper()
	ctx := context.Background()
	pa := &lossy{serial: map[string]uint32{}}
	ks, err := soft.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	k := keys.New(db, ks, pa, slog.New(slog.DiscardHandler), time.Now)
	first, err := k.Init(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return k, db, pa, first
}

// A rotation cut short after the authority certified the new key (its
// answer lost, or the hub killed before it recorded the key) leaves a key
// the authority vouches for and the hub never heard of. The next Certify
// records it retired and compromised from its making, so reports tell the
// authority and verifiers refuse its stamps; the old key goes on signing.
// Its events are dated in a period not yet reported.
func TestRotationCutShortLeavesNoUnknownKey(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		k, db, pa, first := lossyKeys(t, dsn)
		pa.lose = true
		if _, err := k.Rotate(ctx); err == nil {
			t.Fatal("a rotation whose answer was lost said nothing")
		}
		pa.lose = false
		// A report built meanwhile: the key's events go in the next one.
		floor := time.Now().Add(time.Second).UnixMicro()
		if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE report_floor SET floor = ? WHERE id = 1`), floor); err != nil {
			t.Fatal(err)
		}
		if err := k.Certify(ctx); err != nil {
			t.Fatal(err)
		}
		all, err := k.All(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != len(pa.serial) {
			t.Fatalf("the authority certified %d keys, the hub publishes %d", len(pa.serial), len(all))
		}
		var orphan *keys.Key
		for i := range all {
			if all[i].CertSerial != first.CertSerial {
				orphan = &all[i]
			}
		}
		if orphan == nil || orphan.Compromised == nil || orphan.Retired == nil {
			t.Fatalf("the key certified but not recorded: %+v", orphan)
		}
		if orphan.Created.UnixMicro() < floor || orphan.Retired.UnixMicro() < floor {
			t.Fatalf("the key's events dated %s and %s, before the last period built", orphan.Created, orphan.Retired)
		}
		if active, err := k.Active(ctx); err != nil || active.CertSerial != first.CertSerial {
			t.Fatalf("active %+v %v, want key %d", active, err, first.CertSerial)
		}
		// Settled once: a later Certify finds nothing to do.
		if err := k.Certify(ctx); err != nil {
			t.Fatal(err)
		}
		if again, _ := k.All(ctx); len(again) != len(all) {
			t.Fatalf("%d keys after a second Certify, want %d", len(again), len(all))
		}
	})
}

// While the authority is out of reach after a compromise, the leader tries
// the rotation every round: each try registers the same new key again,
// rather than make one a try (an hour's outage made 720 on the token).
func TestRetriedRotationMakesOneKey(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		k, db, pa, first := lossyKeys(t, dsn)
		pa.lose = true
		if err := k.Compromise(ctx, first.CertSerial, time.Now()); err == nil {
			t.Fatal("a compromise whose new key was not registered said nothing")
		}
		for range 10 {
			if _, err := k.FinishCompromise(ctx); err == nil {
				t.Fatal("a rotation whose answer was lost said nothing")
			}
		}
		pa.lose = false
		next, err := k.FinishCompromise(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var regs int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM key_registrations`).Scan(&regs); err != nil {
			t.Fatal(err)
		}
		if len(pa.serial) != 2 || regs != 0 || next.CertSerial == first.CertSerial {
			t.Fatalf("the authority was asked for %d keys, %d registrations left, active key %d; want 2, 0 and a new key",
				len(pa.serial), regs, next.CertSerial)
		}
	})
}

// A key's certified public half is what the PSDM workers check the HSM's
// signer against (psdm.Key.Public): it is the HSM key's, as recorded and
// as read back.
func TestPublicIsTheCertifiedKey(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		ks, err := soft.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		k := keys.New(db, ks, newAuthority(0), slog.New(slog.DiscardHandler), time.Now)
		made, err := k.Init(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want, err := ks.Public(made.Label)
		if err != nil {
			t.Fatal(err)
		}
		active, err := k.Active(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range []keys.Key{made, active} {
			if pub, err := key.Public(); err != nil || !pub.Equal(want) {
				t.Fatalf("key %d: Public = %v, %v; want the HSM key's", key.CertSerial, pub, err)
			}
		}
		if _, err := (keys.Key{CertSerial: 9, PublicKeyPEM: "junk"}).Public(); err == nil {
			t.Fatal("a key with no readable public key has one")
		}
		// None active (a compromise not yet finished): nothing to check.
		if pub, err := (keys.Key{}).Public(); pub != nil || err != nil {
			t.Fatalf("the zero Key: %v, %v", pub, err)
		}
	})
}
