package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/frank-postage/frank/hub/store"
)

// hub kiosk add for a kiosk that has sold, in another store, fails with
// the refusal on standard error and the way out (retire it, add a new
// kiosk id); in its own store (a lost password recovered) it provisions.
func TestKioskAddRefusesMoveOfKioskThatSold(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hub")
	if code, out, errOut := hubCmd(t, dir, "kiosk", "add", "kiosk-1", "--store", "store-a"); code != 0 || !strings.Contains(out, "kiosk kiosk-1 provisioned in store store-a") {
		t.Fatalf("kiosk add: exit %d\n%s%s", code, out, errOut)
	}
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(dir, "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.ExecContext(ctx, `INSERT INTO sales (kiosk_id, request_id, body_hash, status, total, result, created_at) VALUES ('kiosk-1', 'r1', X'01', 'rejected', 0, X'7B7D', 1)`)
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := hubCmd(t, dir, "kiosk", "add", "kiosk-1", "--store", "store-b")
	if code == 0 || out != "" {
		t.Fatalf("kiosk add in another store after a sale: exit %d, printed %q", code, out)
	}
	for _, want := range []string{"hub kiosk add: ", "invalid_request", "kiosk kiosk-1 has sales in store store-a", "hub kiosk retire kiosk-1", "new kiosk id in store store-b"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("the refusal does not say %q: %s", want, errOut)
		}
	}
	if code, out, errOut := hubCmd(t, dir, "kiosk", "add", "kiosk-1", "--store", "store-a"); code != 0 || !strings.Contains(out, "kiosk kiosk-1 provisioned in store store-a") || !strings.Contains(out, "enrollment code: ") {
		t.Fatalf("kiosk add again in its own store: exit %d\n%s%s", code, out, errOut)
	}
}
