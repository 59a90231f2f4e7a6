package ledger_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"

	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/hub/stock"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// A web customer's sale commits only on a sheet that is theirs, or that
// is unclaimed and unused and becomes theirs again: a hub whose claim was
// dropped while it seemed dead, and which lived on to commit the sale,
// never puts stamps on a sheet nobody owns, or on another customer's.
func TestWebSaleCommitsOnlyOnTheBuyersSheet(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, dsn string) {
		f := newFixture(t, dsn, ledger.Config{}, psdm.Config{Workers: 1})
		ctx := context.Background()
		st := stock.New(f.db, f.clock.Now)
		if err := st.AddStore(ctx, stock.WebStore, "Web"); err != nil {
			t.Fatal(err)
		}
		sheets, err := st.Issue(ctx, stock.WebStore, 4)
		if err != nil {
			t.Fatal(err)
		}
		mine, dropped, theirs, unpaid := sheets[0], sheets[1], sheets[2], sheets[3]
		for sh, acct := range map[protocol.SheetSerial]int64{mine: 7, theirs: 8} {
			if err := st.AssignToAccount(ctx, sh, acct); err != nil {
				t.Fatal(err)
			}
		}
		sell := func(id string, sh protocol.SheetSerial) error {
			s := newSale(id, 780, fmt.Sprintf("%s-01", sh))
			s.Account = 7
			_, err := f.pool.Sell(ctx, s)
			return err
		}
		if err := sell("mine", mine); err != nil {
			t.Fatalf("a sale on the buyer's sheet: %v", err)
		}
		if err := sell("dropped", dropped); err != nil {
			t.Fatalf("a sale on a sheet whose claim was dropped: %v", err)
		}
		var owner int64
		if err := f.db.QueryRowContext(ctx, f.db.Rebind(`SELECT account_id FROM sheets WHERE serial = ?`), uint32(dropped)).Scan(&owner); err != nil || owner != 7 {
			t.Fatalf("the dropped sheet's owner after the sale: %d, %v; want the buyer", owner, err)
		}
		if err := sell("theirs", theirs); !isCode(err, protocol.CodeLabelNotAssigned) {
			t.Fatalf("a sale on another customer's sheet: %v, want label_not_assigned", err)
		}
		var n int
		if err := f.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM indicia WHERE request_id = 'theirs'`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%d stamps sold on another customer's sheet (%v)", n, err)
		}
		// A sale refused after the sheet's look (its payment changed no
		// row) leaves an unclaimed sheet unclaimed.
		s := newSale("unpaid", 780, fmt.Sprintf("%s-01", unpaid))
		s.Account = 7
		s.Payment = &store.Write{Query: `UPDATE sheets SET used = used WHERE serial = -1`, Stale: protocol.Errorf(protocol.CodeInsufficientFunds, "no funds")}
		if _, err := f.pool.Sell(ctx, s); !isCode(err, protocol.CodeInsufficientFunds) {
			t.Fatalf("a sale whose payment changed nothing: %v", err)
		}
		var unpaidOwner sql.NullInt64
		if err := f.db.QueryRowContext(ctx, f.db.Rebind(`SELECT account_id FROM sheets WHERE serial = ?`), uint32(unpaid)).Scan(&unpaidOwner); err != nil || unpaidOwner.Valid {
			t.Fatalf("a refused sale left the unclaimed sheet to account %v (%v)", unpaidOwner, err)
		}
		f.check()
	})
}
