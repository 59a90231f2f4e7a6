package operators_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// TestMain stops the PostgreSQL server the tests share.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// clock is a settable store clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func open(t *testing.T, dsn string) (*operators.Operators, *clock) {
	t.Helper()
	db, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	ops := operators.New(db, c.now)
	ops.Cost = bcrypt.MinCost
	if _, err := ops.Add(context.Background(), "olga", "operator password 1", operators.RoleOps, nil); err != nil {
		t.Fatal(err)
	}
	return ops, c
}

// A token works until its lifetime is up on the store's clock, then is
// refused just as a wrong one is; it carries its scope and expiry.
func TestTokenExpires(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		ops, c := open(t, dsn)
		tok, err := ops.NewToken(ctx, "olga", "ci", operators.ReadOnly, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		op, err := ops.ByToken(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		want := operators.Token{Name: "ci", Scope: operators.ReadOnly, ExpiresAt: c.t.Add(time.Hour).UTC()}
		if op.Login != "olga" || op.Token == nil || *op.Token != want || op.Token.MayWrite() {
			t.Fatalf("by token: %+v %+v, want %+v", op, op.Token, want)
		}
		c.t = c.t.Add(time.Hour - time.Microsecond)
		if _, err := ops.ByToken(ctx, tok); err != nil {
			t.Fatalf("a microsecond before expiry: %v", err)
		}
		c.t = c.t.Add(time.Microsecond)
		if _, err := ops.ByToken(ctx, tok); !errors.Is(err, operators.ErrAuth) {
			t.Fatalf("expired token: %v, want ErrAuth", err)
		}
		if _, err := ops.ByToken(ctx, "frk_wrong"); !errors.Is(err, operators.ErrAuth) {
			t.Fatalf("wrong token: %v, want ErrAuth", err)
		}
	})
}

// A write token says so; tokens that never expire, live past the maximum
// or have no known scope are not made.
func TestTokenScopeAndLimits(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		ops, _ := open(t, dsn)
		tok, err := ops.NewToken(ctx, "olga", "deploy", operators.ReadWrite, operators.MaxTokenTTL)
		if err != nil {
			t.Fatal(err)
		}
		if op, err := ops.ByToken(ctx, tok); err != nil || !op.Token.MayWrite() {
			t.Fatalf("write token: %+v %v", op, err)
		}
		for _, bad := range []struct {
			scope operators.Scope
			ttl   time.Duration
			want  string
		}{
			{operators.ReadOnly, 0, "lifetime 0s"},
			{operators.ReadOnly, -time.Hour, "lifetime -1h0m0s"},
			{operators.ReadOnly, operators.MaxTokenTTL + time.Second, "at most 365 days"},
			{"admin", time.Hour, `scope "admin"`},
		} {
			if _, err := ops.NewToken(ctx, "olga", "x", bad.scope, bad.ttl); err == nil || !strings.Contains(err.Error(), bad.want) {
				t.Errorf("NewToken %s %v: %v, want an error naming %q", bad.scope, bad.ttl, err, bad.want)
			}
		}
	})
}

// Tokens made before schema 36 keep writing, as they could, but expire 90
// days after the migration, or after they were made if that is later.
func TestOldTokensGetExpiry(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		old, err := store.OpenVersion(ctx, dsn, 35)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		future := now.Add(30 * 24 * time.Hour) // a hub whose clock ran ahead
		if _, err := old.ExecContext(ctx, old.Rebind(`INSERT INTO operators (id, login, password_hash, role, created_at) VALUES (1, 'olga', 'x', 'ops', ?)`), now.UnixMicro()); err != nil {
			t.Fatal(err)
		}
		for tok, made := range map[string]time.Time{"frk_old": now.Add(-400 * 24 * time.Hour), "frk_ahead": future} {
			h := sha256.Sum256([]byte(tok))
			if _, err := old.ExecContext(ctx, old.Rebind(`INSERT INTO api_tokens (hash, operator_id, name, created_at) VALUES (?, 1, 'script', ?)`), h[:], made.UnixMicro()); err != nil {
				t.Fatal(err)
			}
		}
		old.Close()

		before := now.Add(-time.Second) // the database's clock, to the second
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		after := time.Now()
		c := &clock{t: after}
		ops := operators.New(db, c.now)
		ninety := operators.DefaultTokenTTL
		for tok, want := range map[string][2]time.Time{
			"frk_old":   {before.Add(ninety), after.Add(ninety)},
			"frk_ahead": {future.Add(ninety).Truncate(time.Microsecond), future.Add(ninety)},
		} {
			op, err := ops.ByToken(ctx, tok)
			if err != nil {
				t.Fatalf("%s after the migration: %v", tok, err)
			}
			if exp := op.Token.ExpiresAt; exp.Before(want[0]) || exp.After(want[1]) || !op.Token.MayWrite() {
				t.Errorf("%s: %+v, want write, expiring in [%v, %v]", tok, op.Token, want[0], want[1])
			}
		}
		c.t = after.Add(ninety + time.Second)
		if _, err := ops.ByToken(ctx, "frk_old"); !errors.Is(err, operators.ErrAuth) {
			t.Fatalf("an old token 90 days on: %v, want ErrAuth", err)
		}
	})
}

// Running Add again for an existing login is how a password is reset: with
// no role and no stores it keeps what the operator may do, so a staff
// member's reset does not make them ops; a new login without a role is ops.
func TestResetKeepsRoleAndStores(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, `INSERT INTO stores (id, name, created_at) VALUES ('S1', 'S1', 0), ('S2', 'S2', 0)`); err != nil {
			t.Fatal(err)
		}
		ops := operators.New(db, nil)
		ops.Cost = bcrypt.MinCost
		if _, err := ops.Add(ctx, "bob", "operator password 1", operators.RoleStaff, []string{"S1"}); err != nil {
			t.Fatal(err)
		}
		check := func(what, login, pw, role string, stores ...string) {
			t.Helper()
			op, err := ops.Authenticate(ctx, login, pw)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if op.Role != role || strings.Join(op.Stores, ",") != strings.Join(stores, ",") {
				t.Errorf("%s: %s is %s of %v, want %s of %v", what, login, op.Role, op.Stores, role, stores)
			}
		}
		op, err := ops.Add(ctx, "bob", "operator password 2", "", nil)
		if err != nil || op.Role != operators.RoleStaff || strings.Join(op.Stores, ",") != "S1" {
			t.Fatalf("reset: %+v %v, want staff of S1", op, err)
		}
		check("reset", "bob", "operator password 2", operators.RoleStaff, "S1")
		// Stores given alone change the stores, and the role stays.
		if _, err := ops.Add(ctx, "bob", "operator password 3", "", []string{"S2"}); err != nil {
			t.Fatal(err)
		}
		check("new stores", "bob", "operator password 3", operators.RoleStaff, "S2")
		// A role given explicitly still changes it.
		if _, err := ops.Add(ctx, "bob", "operator password 4", operators.RoleOps, nil); err != nil {
			t.Fatal(err)
		}
		check("made ops", "bob", "operator password 4", operators.RoleOps)
		// Ops made staff need stores: they have none to keep.
		if _, err := ops.Add(ctx, "bob", "operator password 5", operators.RoleStaff, nil); err == nil || !strings.Contains(err.Error(), "at least one store") {
			t.Errorf("ops made staff without stores: %v, want a refusal", err)
		}
		if _, err := ops.Add(ctx, "newbie", "operator password 1", "", nil); err != nil {
			t.Fatal(err)
		}
		check("new login", "newbie", "operator password 1", operators.RoleOps)
	})
}

// A metrics token comes back as such, under the name it was given, and
// may not write; no other token's name may pose as a metrics token's
// stored name.
func TestMetricsToken(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		ops, _ := open(t, dsn)
		tok, err := ops.NewToken(ctx, "olga", "prometheus", operators.MetricsOnly, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		op, err := ops.ByToken(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		if op.Token.Scope != operators.MetricsOnly || op.Token.Name != "prometheus" || op.Token.MayWrite() {
			t.Errorf("metrics token: %+v, want scope metrics named prometheus, read-only", op.Token)
		}
		read, err := ops.NewToken(ctx, "olga", "ci", operators.ReadOnly, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if op, err := ops.ByToken(ctx, read); err != nil || op.Token.Scope != operators.ReadOnly {
			t.Errorf("read token: %+v %v", op, err)
		}
	})
}
