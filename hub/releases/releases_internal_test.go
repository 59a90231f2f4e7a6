package releases

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/commands"
	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/pgtest"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestMain stops the PostgreSQL server the tests share.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// newBook opens dsn with three kiosks in service and release 9.9.9
// published.
func newBook(t *testing.T, dsn string) (*Releases, *store.DB) {
	t.Helper()
	return bookAt(t, dsn, nil)
}

// clock is a settable clock for the book and its commands.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newClockedBook is newBook on a clock the test moves.
func newClockedBook(t *testing.T, dsn string) (*Releases, *store.DB, *clock) {
	t.Helper()
	c := &clock{t: time.Now()}
	r, db := bookAt(t, dsn, c.Now)
	return r, db, c
}

func bookAt(t *testing.T, dsn string, now func() time.Time) (*Releases, *store.DB) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	kiosks := fleet.New(db)
	for _, k := range []string{"kiosk-1", "kiosk-2", "kiosk-3"} {
		if _, err := kiosks.Add(ctx, k, "store-a"); err != nil {
			t.Fatal(err)
		}
	}
	al := alerts.New(db, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	r := New(db, commands.New(db, kiosks, now), kiosks, al, now)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	bin := []byte("kiosk 9.9.9")
	sum := sha256.Sum256(bin)
	manifest, _ := json.Marshal(protocol.ReleaseManifest{Version: "9.9.9", Created: time.Now().UTC(),
		Artifacts: []protocol.Artifact{{Arch: "arm64", Size: int64(len(bin)), SHA256: hex.EncodeToString(sum[:])}}})
	if _, err := r.Publish(ctx, pub, manifest, ed25519.Sign(priv, manifest), map[string][]byte{"arm64": bin}, "ann"); err != nil {
		t.Fatal(err)
	}
	return r, db
}

func pendingOffers(t *testing.T, db *store.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM kiosk_commands WHERE action = 'update' AND status = 'pending'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A leader's Step that read a rollout running, then goes on after ops
// aborted it (the leader was slow or paused), offers nobody the release:
// the abort expired the offers it knew, and no other is resent to kiosks
// until they answer.
func TestStepAfterAbortOffersNothing(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		r, db := newBook(t, dsn)
		ro, err := r.Start(ctx, "9.9.9", []Stage{{Percent: 100}}, 50, 0, time.Minute, "ann")
		if err != nil {
			t.Fatal(err)
		}
		seen, err := r.Get(ctx, ro.ID) // as Step's List read it
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Abort(ctx, ro.ID, "ops"); err != nil {
			t.Fatal(err)
		}
		if err := r.step(ctx, seen); err != nil {
			t.Fatal(err)
		}
		after, err := r.Get(ctx, ro.ID)
		if err != nil {
			t.Fatal(err)
		}
		if n := pendingOffers(t, db); n != 0 || after.Offered != 0 {
			t.Errorf("rollout %d is %s, yet %d offers of it are pending and it offered %d kiosks", ro.ID, after.State, n, after.Offered)
		}
	})
}

// An abort that comes while Step links an offer waits for the link, so
// it expires that offer too. PostgreSQL only: on SQLite the one writer
// serialises them.
func TestAbortWaitsForOfferLink(t *testing.T) {
	ctx := context.Background()
	r, db := newBook(t, pgtest.NewTestDatabase(t))
	ro, err := r.Start(ctx, "9.9.9", []Stage{{Percent: 100}}, 50, 0, time.Minute, "ann")
	if err != nil {
		t.Fatal(err)
	}
	links := 0
	r.linked = func() {
		links++
		// Abort's UPDATE takes this lock: it must wait for the link to
		// commit, or it would expire the rollout's offers without this one.
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		var id int64
		err = tx.QueryRowContext(ctx, `SELECT id FROM rollouts WHERE id = $1 FOR NO KEY UPDATE NOWAIT`, ro.ID).Scan(&id)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "55P03" { // lock_not_available
			t.Errorf("link %d: an abort of rollout %d would not wait for the offer's link (%v)", links, ro.ID, err)
		}
	}
	if err := r.Step(ctx); err != nil {
		t.Fatal(err)
	}
	r.linked = nil
	if links != 3 {
		t.Fatalf("linked %d offers, want 3", links)
	}
	if err := r.Abort(ctx, ro.ID, "ops"); err != nil {
		t.Fatal(err)
	}
	if n := pendingOffers(t, db); n != 0 {
		t.Errorf("rollout %d is aborted, yet %d offers of it are pending", ro.ID, n)
	}
}

// answer records kiosk k's answer to its latest command: ok, running
// firmware.
func answer(t *testing.T, r *Releases, k, firmware string) {
	t.Helper()
	ctx := context.Background()
	cmds, err := r.commands.Of(ctx, k, 1)
	if err != nil || len(cmds) != 1 {
		t.Fatalf("%s's commands: %v %v", k, cmds, err)
	}
	if err := r.commands.Record(ctx, k, &protocol.CommandResult{CommandID: cmds[0].CommandID, KioskID: k, Status: protocol.ResultOK, Firmware: firmware}); err != nil {
		t.Fatal(err)
	}
}

// soakedCanary starts a rollout of kiosk-1, then kiosk-2, then the fleet,
// with kiosk-1 offered, healthy and soaked: the leader's next step widens
// it to stage 1.
func soakedCanary(t *testing.T, dsn string) (*Releases, *Rollout) {
	t.Helper()
	ctx := context.Background()
	r, _, c := newClockedBook(t, dsn)
	ro, err := r.Start(ctx, "9.9.9", []Stage{{Kiosks: []string{"kiosk-1"}}, {Kiosks: []string{"kiosk-2"}}, {Percent: 100}}, 0, time.Minute, time.Minute, "ann")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Step(ctx); err != nil { // offers kiosk-1
		t.Fatal(err)
	}
	answer(t, r, "kiosk-1", "9.9.9")
	c.Add(time.Minute)
	return r, ro
}

// A leader's step that judged stage 0 healthy and soaked, after ops
// widened the rollout to stage 1 meanwhile, leaves it there: widening
// again would move past stage 1 before it was offered, soaked or judged.
func TestStepWidensOnlyTheStageItJudged(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		r, ro := soakedCanary(t, dsn)
		seen, err := r.Get(ctx, ro.ID) // as the leader's List read it
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Widen(ctx, ro.ID); err != nil { // ops, meanwhile
			t.Fatal(err)
		}
		if err := r.step(ctx, seen); err != nil {
			t.Fatal(err)
		}
		if after, _ := r.Get(ctx, ro.ID); after.Stage != 1 {
			t.Fatalf("ops widened rollout %d once and a stale step followed: stage %d, want 1", ro.ID, after.Stage)
		}
		// Stage 1 is offered next, and only its kiosk.
		if err := r.Step(ctx); err != nil {
			t.Fatal(err)
		}
		if after, _ := r.Get(ctx, ro.ID); after.Stage != 1 || after.Offered != 2 || after.Pending != 1 {
			t.Errorf("rollout %d: stage %d, offered %d, pending %d; want stage 1 offered to kiosk-1 and kiosk-2, kiosk-2 pending", ro.ID, after.Stage, after.Offered, after.Pending)
		}
	})
}

// Two steps that both read stage 0 healthy and soaked (two hubs that
// both think they lead, or a slow step and the next) widen it once.
func TestOverlappingStepsWidenOnce(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		r, ro := soakedCanary(t, dsn)
		a, err := r.Get(ctx, ro.ID)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := r.Get(ctx, ro.ID)
		for _, seen := range []*Rollout{a, b} {
			if err := r.step(ctx, seen); err != nil {
				t.Fatal(err)
			}
		}
		if after, _ := r.Get(ctx, ro.ID); after.Stage != 1 {
			t.Errorf("two steps that read stage 0 left rollout %d at stage %d, want 1", ro.ID, after.Stage)
		}
	})
}

// A kiosk retired (stolen) after the rollout offered it the release will
// never answer: the rollout counts only the kiosks in service, ends when
// they are all healthy, and raises no rollout_halted, even once the
// retired kiosk's offer would have expired.
func TestRetiredKioskLeavesTheRolloutsCounts(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		r, db, c := newClockedBook(t, dsn)
		ro, err := r.Start(ctx, "9.9.9", []Stage{{Percent: 100}}, 0, 0, time.Minute, "ann")
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Step(ctx); err != nil {
			t.Fatal(err)
		}
		answer(t, r, "kiosk-1", "9.9.9")
		answer(t, r, "kiosk-2", "9.9.9")
		if err := r.kiosks.Retire(ctx, "kiosk-3", "stolen", true); err != nil {
			t.Fatal(err)
		}
		got, _ := r.Get(ctx, ro.ID)
		if got.Offered != 2 || got.Healthy != 2 || got.Failed != 0 || got.Pending != 0 {
			t.Errorf("with kiosk-3 retired: offered %d healthy %d failed %d pending %d; want 2 offered, both healthy", got.Offered, got.Healthy, got.Failed, got.Pending)
		}
		c.Add(commands.Expiry + time.Hour)
		if err := r.commands.Resend(ctx, c.Now()); err != nil {
			t.Fatal(err)
		}
		if err := r.Step(ctx); err != nil {
			t.Fatal(err)
		}
		if got, _ = r.Get(ctx, ro.ID); got.State != Done {
			t.Errorf("every kiosk in service is healthy, yet rollout %d is %s: %s", ro.ID, got.State, got.Why)
		}
		list, err := alerts.New(db, slog.New(slog.NewTextHandler(io.Discard, nil)), nil).List(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range list {
			if a.Kind == alerts.RolloutHalted {
				t.Errorf("a retired kiosk raised %s: %s", a.Kind, a.Message)
			}
		}
	})
}

// An update answered ok by a kiosk naming another firmware than the
// release (a buggy kiosk) is no healthy kiosk: it is recorded rejected
// with update_failed, and counts failed. An ok naming the release counts
// healthy.
func TestUpdateOkNamingAnotherFirmwareCountsFailed(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		r, _ := newBook(t, dsn)
		ro, err := r.Start(ctx, "9.9.9", []Stage{{Kiosks: []string{"kiosk-1", "kiosk-2"}}}, 100, 0, time.Minute, "ann")
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Step(ctx); err != nil {
			t.Fatal(err)
		}
		answer(t, r, "kiosk-1", "9.9.9")
		answer(t, r, "kiosk-2", "1.0.0")
		got, _ := r.Get(ctx, ro.ID)
		if got.Healthy != 1 || got.Failed != 1 {
			t.Errorf("kiosk-1 ok on 9.9.9, kiosk-2 ok on 1.0.0: healthy %d failed %d, want 1 and 1", got.Healthy, got.Failed)
		}
		cmds, _ := r.commands.Of(ctx, "kiosk-2", 1)
		c := cmds[0]
		if c.Status != commands.Rejected || c.Result == nil || c.Result.Error == nil || c.Result.Error.Code != protocol.CodeUpdateFailed || c.Result.Firmware != "1.0.0" {
			t.Errorf("kiosk-2's ok on 1.0.0 recorded %s with result %+v; want rejected, update_failed, firmware 1.0.0 kept", c.Status, c.Result)
		}
	})
}
