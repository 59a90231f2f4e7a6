package hub_test

import (
	"context"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/commands"
	"github.com/frank-postage/frank/hub/releases"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// A leader that fails between issuing a rollout's update command and
// linking it to the rollout (killed, or its link refused) leaves no offer
// behind: the next round offers the kiosk the release once, and aborting
// the rollout withdraws every offer it made, so the kiosk is not sent a
// release ops aborted.
func TestRolloutOfferUnlinkedIsNotLeft(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.publish("9.9.9")
	db := e.openDB()
	// The link fails as if the leader died right before it.
	failLink := []string{`CREATE TRIGGER fail_link BEFORE INSERT ON rollout_kiosks BEGIN SELECT RAISE(ABORT, 'leader killed'); END`}
	unfail := []string{`DROP TRIGGER fail_link`}
	if db.Dialect == store.Postgres {
		failLink = []string{`CREATE FUNCTION fail_link() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'leader killed'; END $$`,
			`CREATE TRIGGER fail_link BEFORE INSERT ON rollout_kiosks FOR EACH ROW EXECUTE FUNCTION fail_link()`}
		unfail = []string{`DROP TRIGGER fail_link ON rollout_kiosks`, `DROP FUNCTION fail_link()`}
	}
	exec := func(qs []string) {
		t.Helper()
		for _, q := range qs {
			if _, err := db.ExecContext(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
	}
	exec(failLink)
	rs := e.h.Releases()
	ro, err := rs.Start(ctx, "9.9.9", []releases.Stage{{Kiosks: []string{"kiosk-2"}}}, 50, 0, time.Minute, "ann")
	if err != nil {
		t.Fatal(err)
	}
	e.h.Round() // offers kiosk-2 the release, and fails to link the offer
	exec(unfail)
	e.h.Round() // offers it again
	offers := func() []commands.Command {
		t.Helper()
		cmds, err := e.h.Commands().Of(ctx, "kiosk-2", 10)
		if err != nil {
			t.Fatal(err)
		}
		var out []commands.Command
		for _, c := range cmds {
			if c.Action == protocol.ActionUpdate {
				out = append(out, c)
			}
		}
		return out
	}
	if got := offers(); len(got) != 1 {
		t.Fatalf("kiosk-2 has %d update commands, want the one its rollout knows", len(got))
	}
	if err := rs.Abort(ctx, ro.ID, "ops"); err != nil {
		t.Fatal(err)
	}
	for _, c := range offers() {
		if c.Status != commands.Expired {
			t.Fatalf("after the abort offer %s is %s, want %s", c.CommandID, c.Status, commands.Expired)
		}
	}
}
