package fleet_test

import (
	"context"
	"testing"

	"github.com/frank-postage/frank/hub/commands"
	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// Retiring a kiosk expires the commands it has not answered, in the same
// transaction: it will never answer them, and an update a rollout waits
// for would otherwise expire a day later as a failure of the release.
// Another kiosk's commands stay pending, and the retired kiosk's stay on
// its page.
func TestRetireExpiresTheKiosksUnansweredCommands(t *testing.T) {
	ctx := context.Background()
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		reg := fleet.New(db)
		cmds := commands.New(db, reg, nil)
		for _, k := range []string{"kiosk-1", "kiosk-2"} {
			if _, err := reg.Add(ctx, k, "store-1"); err != nil {
				t.Fatal(err)
			}
			if _, err := cmds.Issue(ctx, k, protocol.ActionRestart, "", "ann"); err != nil {
				t.Fatal(err)
			}
		}
		if err := reg.Retire(ctx, "kiosk-1", "stolen", true); err != nil {
			t.Fatal(err)
		}
		for k, want := range map[string]string{"kiosk-1": commands.Expired, "kiosk-2": commands.Pending} {
			list, err := cmds.Of(ctx, k, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 1 || list[0].Status != want {
				t.Errorf("%s's commands after kiosk-1 was retired: %+v; want one, %s", k, list, want)
			}
		}
	})
}
