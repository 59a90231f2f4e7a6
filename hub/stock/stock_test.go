package stock_test

import (
	"context"
	"database/sql"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/stock"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// TestMain stops the PostgreSQL server the tests share.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func open(t *testing.T, dsn string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Loads that share sheets, listed in opposite orders, run at once on two
// hubs' connections: none fails (on PostgreSQL they used to lock the
// sheets in opposite orders and one died of a deadlock, internal_error),
// each answer lists the sheets in the request's order, and of two kiosks
// of a store that both scan the same sheets one gets them all, the other
// label_assigned_elsewhere.
func TestConcurrentLoadsOverlapping(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db1, db2 := open(t, dsn), open(t, dsn)
		reg := fleet.New(db1)
		for _, k := range []string{"kiosk-1", "kiosk-2"} {
			if _, err := reg.Add(ctx, k, "store-a"); err != nil {
				t.Fatal(err)
			}
		}
		hubs := []*stock.Stock{stock.New(db1, nil), stock.New(db2, nil)}
		const perRound, loads = 6, 6
		for round := range 20 {
			sheets := make([]protocol.SheetSerial, perRound)
			for i := range sheets {
				sheets[i] = protocol.SheetSerial(0x3333_0000 + round*perRound + i)
			}
			if err := hubs[0].Import(ctx, "store-a", sheets); err != nil {
				t.Fatal(err)
			}
			rivals := round%2 == 1 // kiosk-2 scans the same sheets as kiosk-1
			type load struct {
				kiosk  string
				ops    bool
				sheets []protocol.SheetSerial
				got    []protocol.SheetState
				err    error
			}
			var ls []*load
			for i := range loads {
				l := &load{kiosk: "kiosk-1", sheets: slices.Clone(sheets)}
				if i%2 == 1 {
					slices.Reverse(l.sheets)
				}
				switch {
				case rivals && i%3 == 2:
					l.kiosk = "kiosk-2"
				case !rivals && i%3 == 2:
					l.ops = true // hub stock load: moves sheets, never refuses
				}
				if i == 0 {
					l.sheets = append(l.sheets, sheets[0]) // a sheet scanned twice
				}
				ls = append(ls, l)
			}
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i, l := range ls {
				s := hubs[i%2]
				wg.Go(func() {
					<-start
					if l.ops {
						l.got, l.err = s.Load(ctx, l.kiosk, l.sheets)
					} else {
						l.got, l.err = s.LoadAtKiosk(ctx, l.kiosk, l.sheets)
					}
				})
			}
			close(start)
			wg.Wait()
			winners := map[string]bool{}
			for i, l := range ls {
				if l.err != nil {
					if rivals && protocol.AsError(l.err).Code == protocol.CodeLabelAssignedElsewhere {
						continue
					}
					t.Fatalf("round %d, load %d (%s, %s): %v", round, i, l.kiosk, l.sheets, l.err)
				}
				winners[l.kiosk] = true
				var order []string
				for _, st := range l.got {
					order = append(order, st.Sheet)
					if len(st.Free) != protocol.LabelsPerSheet {
						t.Errorf("round %d, load %d: sheet %s free %v", round, i, st.Sheet, st.Free)
					}
				}
				var want []string
				for _, sh := range l.sheets {
					want = append(want, sh.String())
				}
				if !slices.Equal(order, want) {
					t.Errorf("round %d, load %d: answer lists %v, want the request's order %v", round, i, order, want)
				}
			}
			// Every sheet with one holder, the kiosk of a load that went through.
			holders := map[string]bool{}
			for _, sh := range sheets {
				var h string
				if err := db1.QueryRowContext(ctx, db1.Rebind(`SELECT kiosk_id FROM sheets WHERE serial = ?`), uint32(sh)).Scan(&h); err != nil {
					t.Fatal(err)
				}
				holders[h] = true
			}
			if len(holders) != 1 || len(winners) != 1 {
				t.Fatalf("round %d: sheets held by %v, loads went through for %v; want one kiosk", round, holders, winners)
			}
			for h := range holders {
				if !winners[h] {
					t.Fatalf("round %d: sheets held by %s, whose loads all failed", round, h)
				}
			}
		}
	})
}

// A load answers in the request's order (the order the kiosk hands labels
// out in), though it takes the sheets in serial order: a sheet given twice
// is listed twice, and loaded once.
func TestLoadAnswerOrder(t *testing.T) {
	ctx := context.Background()
	db := open(t, t.TempDir()+"/hub.db")
	if _, err := fleet.New(db).Add(ctx, "kiosk-1", "store-a"); err != nil {
		t.Fatal(err)
	}
	s := stock.New(db, nil)
	a, b, c := protocol.SheetSerial(0x1966_F8D0), protocol.SheetSerial(0x1966_F8CF), protocol.SheetSerial(0x0000_0001)
	if err := s.Import(ctx, "store-a", []protocol.SheetSerial{a, b, c}); err != nil {
		t.Fatal(err)
	}
	got, err := s.LoadAtKiosk(ctx, "kiosk-1", []protocol.SheetSerial{a, b, c, a})
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, st := range got {
		order = append(order, st.Sheet)
	}
	if want := []string{"1966-F8D0", "1966-F8CF", "0000-0001", "1966-F8D0"}; !slices.Equal(order, want) {
		t.Fatalf("answer lists %v, want %v", order, want)
	}
	held, err := s.Sheets(ctx, "kiosk-1")
	if err != nil || len(held) != 3 {
		t.Fatalf("kiosk-1 holds %v (%v), want 3 sheets", held, err)
	}
	_, err = s.LoadAtKiosk(ctx, "kiosk-1", []protocol.SheetSerial{a, 0x7777_0001})
	if e := protocol.AsError(err); e.Code != protocol.CodeLabelUnknown {
		t.Fatalf("load of a sheet never issued: %v, want %s", err, protocol.CodeLabelUnknown)
	}
}

// A web sheet's claim is undone only as it was made: the claim of a sale
// that was not made is let go, but not once a label of the sheet is used
// (the sale committed), nor after ops assigned the sheet since.
func TestUnclaimUndoesOnlyItsOwnClaimOfAnUnusedSheet(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db := open(t, dsn)
		tick := time.Unix(1_800_000_000, 0)
		st := stock.New(db, func() time.Time { tick = tick.Add(time.Second); return tick }) // every write its own time
		if err := st.AddStore(ctx, stock.WebStore, "Web customers"); err != nil {
			t.Fatal(err)
		}
		refused, sold, assigned := protocol.SheetSerial(0x4444_0001), protocol.SheetSerial(0x4444_0002), protocol.SheetSerial(0x4444_0003)
		if err := st.Import(ctx, stock.WebStore, []protocol.SheetSerial{refused, sold, assigned}); err != nil {
			t.Fatal(err)
		}
		owner := func(sh protocol.SheetSerial) int64 {
			t.Helper()
			var id sql.NullInt64
			if err := db.QueryRowContext(ctx, db.Rebind(`SELECT account_id FROM sheets WHERE serial = ?`), uint32(sh)).Scan(&id); err != nil {
				t.Fatal(err)
			}
			return id.Int64
		}
		claim := func(sh protocol.SheetSerial, acct int64) int64 {
			t.Helper()
			at, err := st.Claim(ctx, sh, acct)
			if err != nil {
				t.Fatal(err)
			}
			return at
		}
		at := claim(refused, 1)
		if at == 0 || claim(refused, 2) != 0 {
			t.Fatalf("a fresh sheet claimed at %d, and again by another: want the first only", at)
		}
		if err := st.Unclaim(ctx, refused, 1, at); err != nil || owner(refused) != 0 || claim(refused, 2) == 0 {
			t.Fatalf("a claim undone: %v, owner %d; want the sheet free for the next customer", err, owner(refused))
		}

		at = claim(sold, 1)
		w := stock.MarkUsed(uint32(sold), 1, tick) // the sale's commit
		if _, err := db.ExecContext(ctx, db.Rebind(w.Query), w.Args...); err != nil {
			t.Fatal(err)
		}
		if err := st.Unclaim(ctx, sold, 1, at); err != nil || owner(sold) != 1 {
			t.Fatalf("a sheet with a stamp sold on it, unclaimed: %v, owner %d; want 1", err, owner(sold))
		}

		at = claim(assigned, 1)
		if err := st.AssignToAccount(ctx, assigned, 1); err != nil {
			t.Fatal(err)
		}
		if err := st.Unclaim(ctx, assigned, 1, at); err != nil || owner(assigned) != 1 {
			t.Fatalf("a sheet ops assigned since its claim, unclaimed: %v, owner %d; want 1", err, owner(assigned))
		}
	})
}

// busyTurns is a sheet's turn held by a live hub's sale: TryTake fails.
type busyTurns struct{ busy protocol.SheetSerial }

func (b busyTurns) TryTake(_ context.Context, scope, name string) (func(), bool, error) {
	return func() {}, scope != "web-sheet" || name != b.busy.String(), nil
}

// A dead hub's web sheet claims with no sale made are dropped when the
// dead are settled; not one a sale committed on, nor a live hub's, nor one
// ops assigned, nor one under a sale being made (its turn is held). The
// same customer's next sale takes a dead hub's claim over; another
// customer's does not.
func TestSettleClaimsDropsDeadHubsUnsoldClaims(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db := open(t, dsn)
		now := time.Unix(1_800_000_000, 0)
		clock := func() time.Time { return now }
		dead, live := stock.New(db, clock), stock.New(db, clock)
		dead.Hub, live.Hub = "hub-dead", "hub-live"
		// Written lapsed 30 s ago, by whichever clock judges it: on
		// PostgreSQL the server's, not now.
		if err := db.RenewHubLease(ctx, "hub-dead", now, now, -30*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := db.RenewHubLease(ctx, "hub-live", now, now, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := live.AddStore(ctx, stock.WebStore, "Web customers"); err != nil {
			t.Fatal(err)
		}
		unsold, sold, lives, assigned, busy, retaken := protocol.SheetSerial(0x5555_0001), protocol.SheetSerial(0x5555_0002),
			protocol.SheetSerial(0x5555_0003), protocol.SheetSerial(0x5555_0004), protocol.SheetSerial(0x5555_0005), protocol.SheetSerial(0x5555_0006)
		if err := live.Import(ctx, stock.WebStore, []protocol.SheetSerial{unsold, sold, lives, assigned, busy, retaken}); err != nil {
			t.Fatal(err)
		}
		claim := func(st *stock.Stock, sh protocol.SheetSerial, acct int64) int64 {
			t.Helper()
			at, err := st.Claim(ctx, sh, acct)
			if err != nil {
				t.Fatal(err)
			}
			return at
		}
		for _, sh := range []protocol.SheetSerial{unsold, sold, assigned, busy, retaken} {
			if claim(dead, sh, 1) == 0 {
				t.Fatalf("sheet %s not claimed", sh)
			}
		}
		claim(live, lives, 1)
		w := stock.MarkUsed(uint32(sold), 1, now) // the sale's commit
		if _, err := db.ExecContext(ctx, db.Rebind(w.Query), w.Args...); err != nil {
			t.Fatal(err)
		}
		if err := live.AssignToAccount(ctx, assigned, 1); err != nil {
			t.Fatal(err)
		}
		if claim(live, retaken, 2) != 0 {
			t.Fatal("another customer took a dead hub's claim over")
		}
		if claim(live, retaken, 1) == 0 {
			t.Fatal("the same customer's next sale did not take the dead hub's claim over")
		}
		dropped, err := live.SettleClaims(ctx, busyTurns{busy})
		if err != nil || !slices.Equal(dropped, []protocol.SheetSerial{unsold}) {
			t.Fatalf("dropped %v, %v; want only %s", dropped, err, unsold)
		}
		if dropped, err := live.SettleClaims(ctx, nil); err != nil || !slices.Equal(dropped, []protocol.SheetSerial{busy}) {
			t.Fatalf("once the turn is free: dropped %v, %v; want %s", dropped, err, busy)
		}
	})
}
