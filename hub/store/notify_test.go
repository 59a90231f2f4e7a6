package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/testbench/pgtest"
)

// A notification sent with a commit reaches a listener on another
// connection; a listener whose connection is killed says so, reconnects,
// says it hears again, and hears what follows. SQLite has no one to tell.
func TestListenNotify(t *testing.T) {
	pgtest.ForEachStore(t, func(t *testing.T, dsn string) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		db, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		got := make(chan string, 16)
		state := make(chan bool, 16)
		done := make(chan struct{})
		go func() {
			defer close(done)
			db.Listen(ctx, store.Listener{
				Handlers:  map[string]func(string){"frank_test": func(p string) { got <- p }},
				Listening: func(on bool) { state <- on },
			})
		}()
		expect := func(want bool) {
			t.Helper()
			select {
			case on := <-state:
				if on != want {
					t.Fatalf("listening %v, want %v", on, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("listener never said listening %v", want)
			}
		}
		expect(true)
		if db.Dialect != store.Postgres {
			if err := db.Notify(ctx, "frank_test", "x"); err != nil {
				t.Fatal(err)
			}
			cancel()
			<-done
			return
		}
		other, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		hear := func(want string) {
			t.Helper()
			if err := other.Notify(ctx, "frank_test", want); err != nil {
				t.Fatal(err)
			}
			select {
			case p := <-got:
				if p != want {
					t.Fatalf("heard %q, want %q", p, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("notification %q never arrived", want)
			}
		}
		hear("one")
		if _, err := other.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'`); err != nil {
			t.Fatal(err)
		}
		expect(false)
		expect(true)
		hear("two")
		cancel()
		<-done
	})
}
