package ledger_test

import (
	"context"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/psdm"
	"github.com/frank-postage/frank/protocol"
)

// Two hubs serve one request at once (a claim lost with its session). One
// hub's sale is committing while the other records a final refusal of the
// same request: the refusal's insert waits on the sale's row and then
// conflicts. Reject answers with the sale that committed, which stands;
// before, it failed, and the refusal went to the kiosk as final.
func TestRejectRacingACommittedSaleAnswersTheSale(t *testing.T) {
	t.Parallel()
	f := newFixture(t, backends[1].dsn(t), ledger.Config{}, psdm.Config{})
	ctx := context.Background()
	s := newSale("dup-1", 780, "1966-F8CF-01")
	tx, err := f.db.BeginTx(ctx, nil) // the other hub's commit, in flight
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	sold := `{"request_id":"dup-1","status":"ok"}`
	if _, err := tx.ExecContext(ctx, `INSERT INTO sales (kiosk_id, request_id, body_hash, status, total, result, created_at)
		VALUES ($1, $2, $3, 'ok', 780, $4, $5)`, s.KioskID, s.RequestID, s.BodyHash, []byte(sold), time.Now().UnixMicro()); err != nil {
		t.Fatal(err)
	}
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := f.l.Reject(ctx, s.KioskID, s.RequestID, s.BodyHash, protocol.Errorf(protocol.CodePaymentDeclined, "declined"))
		done <- result{out, err}
	}()
	waitForALockWait(t, f.db, "the refusal's insert to wait on the sale's row")
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || string(r.out) != sold {
		t.Fatalf("Reject: %s, %v; want the sale that committed", r.out, r.err)
	}
}
