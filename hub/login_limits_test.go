package hub_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/operators"
)

// Wrong passwords sent all at once meet the login limit as if sent one
// after another: of 60 guesses at one operator from one address, at most
// the pair's limit (5) are checked. Before, all 60 passed the check before
// the first failure was counted.
func TestLoginsAtOnceMeetTheLimit(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.PasswordCost = bcrypt.DefaultCost })
	e.operator("olivia", "ops")
	var checked, limited atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 60 {
		b := e.browser()
		wg.Go(func() {
			<-start
			st, _, _ := b.do("POST", "/console/login", url.Values{"login": {"olivia"}, "password": {fmt.Sprint("guess ", i)}})
			switch st {
			case http.StatusUnauthorized:
				checked.Add(1)
			case http.StatusTooManyRequests:
				limited.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if checked.Load() > 5 || checked.Load()+limited.Load() != 60 {
		t.Fatalf("of 60 guesses at once, %d checked and %d refused by the limit; want at most 5 checked", checked.Load(), limited.Load())
	}
}

// Resetting an operator's password (hub operator add, how a stolen one is
// recovered) ends the console sessions and revokes the API tokens made
// with the old one.
func TestOperatorResetEndsSessionsAndTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	thief := e.operator("sam", "staff", "store-b")
	tok, err := e.h.Operators().NewToken(context.Background(), "sam", "stolen", operators.ReadOnly, operators.DefaultTokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	me := func() int {
		st, _, _ := e.browser().do("GET", "/api/v1/ops/me", nil, "Authorization", "Bearer "+tok)
		return st
	}
	if st, _, _ := thief.do("GET", "/console/", nil); st != http.StatusOK || me() != http.StatusOK {
		t.Fatalf("before the reset: console %d, token %d", st, me())
	}
	if _, err := e.h.SetOperator(context.Background(), "sam", "a brand new password", "staff", []string{"store-b"}); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := thief.do("GET", "/console/", nil); st != http.StatusSeeOther {
		t.Errorf("the old session after the reset: %d, want a redirect to the login", st)
	}
	if st := me(); st != http.StatusUnauthorized {
		t.Errorf("the old token after the reset: %d", st)
	}
}

// The console's live fleet stream ends when its session does (here a
// logout): it no longer shows kiosks to someone who lost access.
func TestLiveFleetEndsWithTheSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.operator("sam", "staff", "store-b")
	csrf := b.field("/console/", csrfField)
	req, _ := http.NewRequest("GET", b.base+"/console/events", nil)
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := make(chan string, 16)
	go func() {
		defer close(events)
		rd := bufio.NewReader(resp.Body)
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				return
			}
			if strings.HasPrefix(line, "data: ") {
				events <- line
			}
		}
	}()
	select {
	case <-events:
	case <-time.After(10 * time.Second):
		t.Fatal("no first event")
	}
	if st, _, _ := b.do("POST", "/console/logout", url.Values{"csrf": {csrf}}); st != http.StatusSeeOther {
		t.Fatalf("logout: %d", st)
	}
	deadline := time.After(15 * time.Second)
	for {
		select {
		case _, open := <-events:
			if !open {
				return // the stream ended
			}
		case <-deadline:
			t.Fatal("the live fleet stream still runs 15 s after logout")
		}
	}
}

// A page shows as the site's message only what the site itself set on the
// redirect to it, once: not text put in a link (?flash=), which anyone
// could send to make a phishing message look official.
func TestFlashOnlyFromTheSite(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	msg := "Your password expired: call 555-0100 and read it to the agent"
	for _, p := range []string{"/console/login", "/portal/login"} {
		if _, _, page := e.browser().do("GET", p+"?flash="+url.QueryEscape(msg), nil); strings.Contains(page, "555-0100") {
			t.Errorf("%s shows a link's text as the site's message", p)
		}
	}
	alice := e.customer("alice", "10.00")
	alice.do("GET", "/portal/", nil) // shows the top-up's message
	form := url.Values{"zip": {"02134"}}
	if st, _, _ := alice.post("/portal/", "/portal/zip", form); st != http.StatusSeeOther {
		t.Fatalf("save ZIP: %d", st)
	}
	if _, _, page := alice.do("GET", "/portal/", nil); !strings.Contains(page, `id="flash"`) || !strings.Contains(page, "ZIP code saved.") {
		t.Fatalf("the page after the redirect does not show the site's message:\n%s", page)
	}
	if _, _, page := alice.do("GET", "/portal/", nil); strings.Contains(page, "ZIP code saved.") {
		t.Fatal("the message shown twice")
	}
}
