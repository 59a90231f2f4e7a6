package hub_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/frank-postage/frank/protocol"
)

// The tenth label used invalidates its sheet (nine do not), and an
// invalidated sheet can be neither loaded into a kiosk nor assigned to a
// web customer again; its labels stay used.
func TestTenthLabelInvalidatesSheet(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	sheet, _ := protocol.ParseSheetSerial("1966-F8CF")
	db := e.openDB()
	invalidated := func() bool {
		t.Helper()
		var n int
		if err := db.QueryRow(db.Rebind(`SELECT COUNT(*) FROM sheets WHERE serial = ? AND invalidated_at IS NOT NULL`), uint32(sheet)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	for i := 1; i <= 10; i++ {
		if i == 10 && invalidated() {
			t.Fatal("invalidated after nine labels")
		}
		label := fmt.Sprintf("1966-F8CF-%02d", i)
		if res := decode(t, k.ask(purchase("tenth-"+label, "kiosk-1", label, nil))); res.Status != protocol.ResultOK {
			t.Fatalf("label %d: %+v", i, res.Error)
		}
	}
	if !invalidated() {
		t.Fatal("the tenth label used did not invalidate the sheet")
	}
	if _, err := e.h.Stock().Load(ctx, "kiosk-1", []protocol.SheetSerial{sheet}); protocol.AsError(err).Code != protocol.CodeLabelUsed {
		t.Fatalf("loading the used-up sheet: %v", err)
	}
	e.customer("ulla", "10.00")
	acct, _ := e.h.Accounts().ByLogin(ctx, "ulla")
	if err := e.h.Stock().AssignToAccount(ctx, sheet, acct.ID); err == nil {
		t.Fatal("the used-up sheet was assigned to a customer")
	}
	if res := decode(t, k.ask(purchase("tenth-again", "kiosk-1", "1966-F8CF-01", nil))); res.Status == protocol.ResultOK || res.Error.Code != protocol.CodeLabelUsed {
		t.Fatalf("a label of the used-up sheet sold again: %+v", res.Error)
	}
	e.check()
}
