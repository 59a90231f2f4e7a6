// Package claims makes a request belong to one hub at a time. Hubs that
// share a database and a broker can each receive the same request: a
// kiosk's resend, or a duplicate delivery. The hub that claims it serves
// it. The others wait for the claim to go and then find the recorded
// answer, and a dead hub's claims are taken over, so it holds nothing for
// long.
//
// On PostgreSQL a claim is a session advisory lock, taken and let go on
// the hub's soft-write session (store.SoftExec): no row, no WAL and no
// dead tuples for every sale, and a hub that dies, or loses its
// database, lets go of all its claims as its session ends (the session
// is set to notice a vanished peer in seconds). A hub that is alive but
// paused keeps them: the other hubs wait rather than serve beside it.
// Where there are rows (SQLite shared by several hubs, which tests do),
// a claim is a row written with store.SoftExec, taken over once its
// hub's lease lapses. Either way the look at what the request was
// answered before rides in the claim's transaction (TakeReading).
//
// A claim only makes a duplicate wait instead of being served twice. It
// is not the last word on money: a sale stands only if its commit writes
// the request's sale and payment rows, so two hubs that serve one request
// anyway (a claim lost with a database session) sell it once.
//
// A hub that serves its database alone (SQLite, store.ServeAlone) shares
// its requests with no other hub: its claims (Alone) are only this
// process's locks, with no row to write and delete for every sale.
package claims

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// ErrBusy is a request another live hub still serves when the caller
// stopped waiting: not final, a resend with the same id is served.
var ErrBusy = protocol.Errorf(protocol.CodeOutcomeUnknown,
	"this request is being served by another hub; ask again with the same request_id")

// How often a waiting hub looks again: soon at first, since most sales
// take milliseconds, then no more than a few times a second.
const (
	firstPoll = 5 * time.Millisecond
	maxPoll   = 200 * time.Millisecond
)

// Claims takes and releases this hub's claims.
type Claims struct {
	db    *store.DB
	hub   string
	now   func() time.Time
	alone bool // no other hub: no rows

	mu   sync.Mutex
	held map[key]chan struct{} // claims this process holds; closed on release
}

type key struct{ scope, name string }

// New returns the claims of hub, which names this process in hub_leases.
func New(db *store.DB, hub string, now func() time.Time) *Claims {
	if now == nil {
		now = time.Now
	}
	return &Claims{db: db, hub: hub, now: now, held: map[key]chan struct{}{}}
}

// Alone returns the claims of hub when it is the only hub serving db: no
// other hub can receive its requests, so holding a claim in this process
// is enough. TakeReading then never runs its read; the caller reads on its
// own, off the writing connection.
func Alone(db *store.DB, hub string, now func() time.Time) *Claims {
	c := New(db, hub, now)
	c.alone = true
	return c
}

// Take waits until this hub holds the claim on scope/name and returns its
// release, to be called once the request is done and its answer recorded:
// a hub waiting for the same request then takes the claim and finds that
// answer. It gives up with ErrBusy when ctx ends first.
func (c *Claims) Take(ctx context.Context, scope, name string) (func(), error) {
	release, _, err := c.TakeReading(ctx, scope, name, nil)
	return release, err
}

// TakeReading is Take that runs r (may be nil) in the claim's own
// transaction, right after the row that takes it: what the request's
// earlier holder recorded is then read without another round trip. It
// reports whether r ran so; when the claim was taken another way (from a
// dead hub, or after a wait) it did not, and the caller reads itself.
func (c *Claims) TakeReading(ctx context.Context, scope, name string, r *store.Read) (release func(), read bool, err error) {
	k := key{scope, name}
	if err := c.lock(ctx, k); err != nil {
		return nil, false, err
	}
	wait := firstPoll
	for {
		ok, read, err := c.take(ctx, k, r)
		if err != nil {
			c.unlock(k)
			if ctx.Err() != nil { // the caller's time ran out mid-question: as busy as at the wait
				return nil, false, fmt.Errorf("%w: %w", ErrBusy, err)
			}
			return nil, false, err
		}
		if ok {
			return func() { c.release(k) }, read, nil
		}
		select {
		case <-ctx.Done():
			c.unlock(k)
			return nil, false, ErrBusy
		case <-time.After(wait):
		}
		wait = min(2*wait, maxPoll)
	}
}

// TryTake takes the claim if no live hub holds it, without waiting.
func (c *Claims) TryTake(ctx context.Context, scope, name string) (release func(), ok bool, err error) {
	k := key{scope, name}
	c.mu.Lock()
	if _, busy := c.held[k]; busy {
		c.mu.Unlock()
		return nil, false, nil
	}
	c.held[k] = make(chan struct{})
	c.mu.Unlock()
	ok, _, err = c.take(ctx, k, nil)
	if err != nil || !ok {
		c.unlock(k)
		return nil, false, err
	}
	return func() { c.release(k) }, true, nil
}

// lock waits until no other goroutine of this process holds k, and holds
// it. Within a process the claim is a lock, so a row naming this hub is
// one its own earlier holder failed to delete.
func (c *Claims) lock(ctx context.Context, k key) error {
	for {
		c.mu.Lock()
		ch, busy := c.held[k]
		if !busy {
			c.held[k] = make(chan struct{})
			c.mu.Unlock()
			return nil
		}
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ErrBusy
		}
	}
}

func (c *Claims) unlock(k key) {
	c.mu.Lock()
	ch := c.held[k]
	delete(c.held, k)
	c.mu.Unlock()
	close(ch)
}

// take takes the claim's lock, or inserts its row, or takes the row from
// its hub if that hub is this one or dead. It reports whether this hub now
// holds it, and whether r (may be nil) ran under it.
func (c *Claims) take(ctx context.Context, k key, r *store.Read) (ok, read bool, err error) {
	if c.alone {
		return true, false, nil
	}
	if c.db.Dialect == store.Postgres {
		// The read runs whether or not the lock is taken, and counts
		// only if it was: it came after the lock in the transaction.
		n, err := c.db.SoftExecRead(ctx, r, `SELECT 1 WHERE pg_try_advisory_lock(?)`, lockKey(k))
		if err != nil {
			return false, false, fmt.Errorf("claims: take %s/%s: %w", k.scope, k.name, err)
		}
		return n == 1, n == 1 && r != nil, nil
	}
	for range 3 { // a claim released between the insert and the read
		n, err := c.db.SoftExecRead(ctx, r, `INSERT INTO request_claims (scope, name, hub, claimed_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (scope, name) DO NOTHING`, k.scope, k.name, c.hub, c.now().UnixMicro())
		if err != nil {
			return false, false, fmt.Errorf("claims: take %s/%s: %w", k.scope, k.name, err)
		}
		if n == 1 {
			return true, r != nil, nil
		}
		var holder string
		err = c.db.QueryRowStmt(ctx, nil, `SELECT hub FROM request_claims WHERE scope = ? AND name = ?`, k.scope, k.name).Scan(&holder)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return false, false, fmt.Errorf("claims: read %s/%s: %w", k.scope, k.name, err)
		}
		if holder != c.hub {
			alive, err := c.db.HubAlive(ctx, holder, c.now())
			if err != nil || alive {
				return false, false, err
			}
		}
		// Ours from before, or a dead hub's: take it over, unless another
		// hub got there first.
		n, err = c.db.SoftExec(ctx, `UPDATE request_claims SET hub = ?, claimed_at = ? WHERE scope = ? AND name = ? AND hub = ?`,
			c.hub, c.now().UnixMicro(), k.scope, k.name, holder)
		if err != nil {
			return false, false, fmt.Errorf("claims: take over %s/%s: %w", k.scope, k.name, err)
		}
		return n == 1, false, nil
	}
	return false, false, nil
}

// release deletes the claim and lets this process's next holder in. A
// claim whose row cannot be deleted stays this hub's; its next holder here
// takes it, and after this hub dies anyone may.
func (c *Claims) release(k key) {
	if c.alone {
		c.unlock(k)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c.db.Dialect == store.Postgres {
		// A failed unlock fails its batch, whose session is then closed:
		// the lock goes with it.
		c.db.SoftExec(ctx, `SELECT pg_advisory_unlock(?)`, lockKey(k))
	} else {
		c.db.SoftExec(ctx, `DELETE FROM request_claims WHERE scope = ? AND name = ? AND hub = ?`, k.scope, k.name, c.hub)
	}
	c.unlock(k)
}

// lockKey is k's advisory lock. Two requests whose keys collide only wait
// for each other.
func lockKey(k key) int64 {
	h := fnv.New64a()
	h.Write([]byte(k.scope))
	h.Write([]byte{0})
	h.Write([]byte(k.name))
	return int64(h.Sum64())
}

// Sweep deletes the claim rows taken before now-age, left by a hub that
// died with nobody asking for them again. No request is served for that
// long (age is well over any request's deadline); on PostgreSQL and
// alone, those an earlier version left. It returns how many went.
func (c *Claims) Sweep(ctx context.Context, age time.Duration) (int64, error) {
	res, err := c.db.ExecContext(ctx, c.db.Rebind(`DELETE FROM request_claims WHERE claimed_at < ?`), c.now().Add(-age).UnixMicro())
	if err != nil {
		return 0, fmt.Errorf("claims: sweep: %w", err)
	}
	return res.RowsAffected()
}
