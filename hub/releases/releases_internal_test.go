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
	r := New(db, commands.New(db, kiosks, nil), kiosks, al, nil)
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
