package hub_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub"
)

// The portal's account basics: changing the password, a one-time reset
// link, and the login limits over both.

const firstPassword = "correct horse battery" // what env.customer registers with

var resetLinkField = regexp.MustCompile(`id="reset-link" href="([^"]+)"`)

// login logs a fresh browser in to the portal and returns it and the status.
func (e *env) portalLogin(login, password string) (*browser, int) {
	e.t.Helper()
	b := e.browser()
	st, _, _ := b.do("POST", "/portal/login", url.Values{"login": {login}, "password": {password}})
	return b, st
}

// loggedIn reports whether b's session still opens the portal.
func (b *browser) loggedIn() bool {
	b.t.Helper()
	st, _, _ := b.do("GET", "/portal/", nil)
	return st == http.StatusOK
}

// changePassword posts the change-password form.
func (b *browser) changePassword(current, next, again string) (int, string, string) {
	b.t.Helper()
	return b.post("/portal/password", "/portal/password", url.Values{"current_password": {current}, "new_password": {next}, "new_password2": {again}})
}

// askReset asks for a reset link for login and returns the status and page.
func (b *browser) askReset(login string) (int, string) {
	b.t.Helper()
	st, _, page := b.do("POST", "/portal/forgot", url.Values{"login": {login}})
	return st, page
}

// resetLink asks for a reset link for login on a demo hub and returns it.
func (b *browser) resetLink(login string) string {
	b.t.Helper()
	st, page := b.askReset(login)
	m := resetLinkField.FindStringSubmatch(page)
	if st != http.StatusOK || m == nil {
		b.t.Fatalf("forgot %s: %d, no link:\n%s", login, st, page)
	}
	return strings.ReplaceAll(m[1], "&amp;", "&")
}

// setPassword follows a reset link's form.
func (b *browser) setPassword(link, next, again string) (int, string, string) {
	b.t.Helper()
	u, err := url.Parse(link)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do("POST", "/portal/reset", url.Values{"token": {u.Query().Get("token")}, "new_password": {next}, "new_password2": {again}})
}

func TestPortalChangePassword(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.customer("cora", "")
	other, st := e.portalLogin("cora", firstPassword)
	if st != http.StatusSeeOther || !other.loggedIn() {
		t.Fatalf("second session: %d", st)
	}
	const next = "a brand new passphrase"
	for _, c := range []struct {
		name, current, next, again string
		status                     int
		says                       string
	}{
		{"wrong current password", "not my password", next, next, http.StatusUnauthorized, "current password is wrong"},
		{"new passwords differ", firstPassword, next, next + "!", http.StatusUnprocessableEntity, "two new passwords differ"},
		{"new password too short", firstPassword, "short", "short", http.StatusUnprocessableEntity, "want 10-72 characters"},
	} {
		if st, _, page := b.changePassword(c.current, c.next, c.again); st != c.status || !strings.Contains(page, c.says) {
			t.Errorf("%s: %d, want %d saying %q:\n%s", c.name, st, c.status, c.says, page)
		}
	}
	if _, st := e.portalLogin("cora", firstPassword); st != http.StatusSeeOther {
		t.Fatalf("the refused changes changed the password: login %d", st)
	}
	if st, _, _ := b.do("POST", "/portal/password", url.Values{"current_password": {firstPassword}, "new_password": {next}, "new_password2": {next}}); st != http.StatusForbidden {
		t.Errorf("change without the CSRF token: %d", st)
	}

	st, loc, page := b.changePassword(firstPassword, next, next)
	if st != http.StatusSeeOther || !strings.HasPrefix(loc, "/portal/password?flash=Password+changed") {
		t.Fatalf("change: %d %s %s", st, loc, page)
	}
	if !b.loggedIn() {
		t.Error("the session that changed the password was logged out")
	}
	if other.loggedIn() {
		t.Error("another session of the account outlived the password change")
	}
	if _, st := e.portalLogin("cora", firstPassword); st != http.StatusUnauthorized {
		t.Errorf("old password after the change: %d", st)
	}
	if _, st := e.portalLogin("cora", next); st != http.StatusSeeOther {
		t.Errorf("new password: %d", st)
	}
	// A customer's change ends none of another customer's sessions.
	dan := e.customer("dan", "")
	if _, _, _ = b.changePassword(next, next+" again", next+" again"); !dan.loggedIn() {
		t.Error("cora's change logged dan out")
	}
}

// Without the demo flag the answer to "forgot" is the same page whether
// or not the login exists, and shows no link.
func TestPortalResetAnswerHidesLogins(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.customer("rosa", "")
	anon := e.browser()
	st1, real := anon.askReset("rosa")
	st2, none := anon.askReset("rosb") // as long, so the pages may be compared byte for byte
	if st1 != http.StatusOK || st2 != http.StatusOK || real != strings.ReplaceAll(none, "rosb", "rosa") {
		t.Fatalf("answers differ: %d %d\n%s\n----\n%s", st1, st2, real, none)
	}
	if strings.Contains(real, "reset-link") || !strings.Contains(real, "Mailing the link is not built yet") {
		t.Fatalf("without --show-reset-links:\n%s", real)
	}
	// The link was made, and only its hash is kept.
	db := e.openDB()
	defer db.Close()
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM password_resets`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("reset links stored: %d %v", n, err)
	}
}

func TestPortalPasswordReset(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.ShowResetLinks = true })
	e.customer("rita", "")
	session, _ := e.portalLogin("rita", firstPassword)
	anon := e.browser()

	// In the demo only a real login gets a link; the rest of the answer is the same.
	st, none := anon.askReset("nobody")
	if st != http.StatusOK || strings.Contains(none, "reset-link") || !strings.Contains(none, "If an account has the login <strong>nobody</strong>, a link to set a new password was made") {
		t.Fatalf("unknown login: %d\n%s", st, none)
	}
	link := anon.resetLink("rita")
	if !strings.HasPrefix(link, "/portal/reset?token=") {
		t.Fatalf("link %q", link)
	}
	token := strings.TrimPrefix(link, "/portal/reset?token=")
	db := e.openDB()
	defer db.Close()
	var stored []byte
	if err := db.QueryRowContext(context.Background(), `SELECT hash FROM password_resets`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if h := sha256.Sum256([]byte(token)); !bytes.Equal(stored, h[:]) {
		t.Fatalf("stored %x, want the token's SHA-256", stored)
	}

	if st, _, page := anon.do("GET", link, nil); st != http.StatusOK || !strings.Contains(page, `name="token" value="`+token+`"`) {
		t.Fatalf("open the link: %d\n%s", st, page)
	}
	// A refused password leaves the link to try again.
	if st, _, page := anon.setPassword(link, "a new passphrase", "a new passphrasE"); st != http.StatusUnprocessableEntity || !strings.Contains(page, "differ") {
		t.Fatalf("passwords differ: %d\n%s", st, page)
	}
	if st, _, page := anon.setPassword(link, "short", "short"); st != http.StatusUnprocessableEntity || !strings.Contains(page, "10-72") {
		t.Fatalf("short password: %d\n%s", st, page)
	}
	const next = "a new passphrase"
	st, loc, page := anon.setPassword(link, next, next)
	if st != http.StatusSeeOther || !strings.HasPrefix(loc, "/portal/login?flash=") {
		t.Fatalf("reset: %d %s\n%s", st, loc, page)
	}
	if anon.loggedIn() {
		t.Error("the reset logged the browser in: it must go through the login form and its limits")
	}
	if session.loggedIn() {
		t.Error("a session of the account outlived the reset")
	}
	if _, st := e.portalLogin("rita", firstPassword); st != http.StatusUnauthorized {
		t.Errorf("old password after the reset: %d", st)
	}
	if _, st := e.portalLogin("rita", next); st != http.StatusSeeOther {
		t.Errorf("new password after the reset: %d", st)
	}

	t.Run("a link works once", func(t *testing.T) {
		if st, _, page := anon.do("GET", link, nil); st != http.StatusGone || !strings.Contains(page, "already used") || strings.Contains(page, `name="token"`) {
			t.Errorf("open a used link: %d\n%s", st, page)
		}
		if st, _, page := anon.setPassword(link, "one more passphrase", "one more passphrase"); st != http.StatusGone || !strings.Contains(page, "already used") {
			t.Errorf("use a used link: %d\n%s", st, page)
		}
		if _, st := e.portalLogin("rita", next); st != http.StatusSeeOther {
			t.Errorf("the used link changed the password: %d", st)
		}
	})

	t.Run("a link expires", func(t *testing.T) {
		link := anon.resetLink("rita")
		e.clock.Set(e.clock.Now().Add(29 * time.Minute))
		if st, _, _ := anon.do("GET", link, nil); st != http.StatusOK {
			t.Fatalf("after 29 minutes: %d", st)
		}
		e.clock.Set(e.clock.Now().Add(2 * time.Minute))
		if st, _, page := anon.do("GET", link, nil); st != http.StatusGone || !strings.Contains(page, "expired") {
			t.Errorf("open after 31 minutes: %d\n%s", st, page)
		}
		if st, _, page := anon.setPassword(link, "too late passphrase", "too late passphrase"); st != http.StatusGone || !strings.Contains(page, "expired") {
			t.Errorf("use after 31 minutes: %d\n%s", st, page)
		}
		if _, st := e.portalLogin("rita", next); st != http.StatusSeeOther {
			t.Errorf("the expired link changed the password: %d", st)
		}
	})

	t.Run("a new password spends open links", func(t *testing.T) {
		link := anon.resetLink("rita")
		b, _ := e.portalLogin("rita", next)
		if st, _, page := b.changePassword(next, "changed meanwhile", "changed meanwhile"); st != http.StatusSeeOther {
			t.Fatalf("change: %d\n%s", st, page)
		}
		if st, _, _ := anon.setPassword(link, "from the old link", "from the old link"); st != http.StatusGone {
			t.Errorf("a link made before the change: %d", st)
		}
	})

	t.Run("a link never made", func(t *testing.T) {
		if st, _, page := anon.do("GET", "/portal/reset?token=NOTATOKENNOTATOKENNOTATOKE", nil); st != http.StatusNotFound || !strings.Contains(page, "not valid") {
			t.Errorf("unknown link: %d\n%s", st, page)
		}
	})
}

// Wrong current passwords count as failed logins; a reset neither lifts
// the lock nor logs in; asking for links and trying wrong ones are limited.
func TestPortalPasswordLimits(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *hub.Config) { c.ShowResetLinks = true })
	lena := e.customer("lena", "")
	for i := range 5 {
		if st, _, _ := lena.changePassword(fmt.Sprintf("guess %d guess", i), "whatever it is now", "whatever it is now"); st != http.StatusUnauthorized {
			t.Fatalf("wrong current password %d: %d", i, st)
		}
	}
	if st, _, page := lena.changePassword(firstPassword, "whatever it is now", "whatever it is now"); st != http.StatusTooManyRequests {
		t.Fatalf("sixth try, right password: %d\n%s", st, page)
	}
	if _, st := e.portalLogin("lena", firstPassword); st != http.StatusTooManyRequests {
		t.Fatalf("login after five wrong current passwords: %d, want 429", st)
	}
	anon := e.browser()
	const next = "reset past the lock"
	if st, _, page := anon.setPassword(anon.resetLink("lena"), next, next); st != http.StatusSeeOther {
		t.Fatalf("reset: %d\n%s", st, page)
	}
	if _, st := e.portalLogin("lena", next); st != http.StatusTooManyRequests {
		t.Fatalf("login with the reset password while locked: %d, want 429", st)
	}

	t.Run("asking for links", func(t *testing.T) {
		// Real and unknown logins meet the same limit, so it tells nothing either.
		for _, login := range []string{"lena", "ghost"} {
			tries := 5
			if login == "lena" {
				tries = 4 // one asked above
			}
			for i := range tries {
				if st, _ := anon.askReset(login); st != http.StatusOK {
					t.Fatalf("%s: request %d: %d", login, i, st)
				}
			}
			if st, page := anon.askReset(login); st != http.StatusTooManyRequests || strings.Contains(page, "reset-link") {
				t.Errorf("%s: a sixth request: %d\n%s", login, st, page)
			}
		}
	})

	t.Run("wrong links", func(t *testing.T) {
		e.customer("wes", "")
		link := e.browser().resetLink("wes")
		for i := range 5 {
			if st, _, _ := anon.do("GET", fmt.Sprintf("/portal/reset?token=GUESS%021d", i), nil); st != http.StatusNotFound {
				t.Fatalf("guess %d: %d", i, st)
			}
		}
		if st, _, _ := anon.do("GET", link, nil); st != http.StatusTooManyRequests {
			t.Errorf("a real link after five guesses from the address: %d, want 429", st)
		}
		if st, _, _ := anon.setPassword(link, "guessed my way in", "guessed my way in"); st != http.StatusTooManyRequests {
			t.Errorf("using a real link after five guesses from the address: %d, want 429", st)
		}
		if _, st := e.portalLogin("wes", firstPassword); st != http.StatusSeeOther {
			t.Errorf("the refused reset changed the password: %d", st)
		}
	})
}

// Every password change counts, right ones too: each costs the hub two
// bcrypts, and a session is no licence to spend its CPU. Past the limit
// the form answers 429 without a look at the password.
func TestPasswordChangesLimited(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	b := e.customer("cleo", "")
	pw := firstPassword
	for i := range hub.PasswordChanges {
		next := fmt.Sprintf("%s %d", firstPassword, i)
		if st, _, _ := b.changePassword(pw, next, next); st != http.StatusSeeOther {
			t.Fatalf("change %d: %d", i+1, st)
		}
		pw = next
	}
	if st, _, _ := b.changePassword(pw, "one more new password", "one more new password"); st != http.StatusTooManyRequests {
		t.Fatalf("a change past the limit: %d, want 429", st)
	}
	// The count every hub reads outlives the sweep of 15-minute login counts.
	e.clock.Set(e.clock.Now().Add(20 * time.Minute))
	e.h.Round()
	var kept int
	if err := e.openDB().QueryRow(`SELECT COUNT(*) FROM login_failures WHERE name LIKE 'password-change:%'`).Scan(&kept); err != nil || kept != 1 {
		t.Fatalf("the shared count of password changes after a sweep: %d rows (%v)", kept, err)
	}
	e.clock.Set(e.clock.Now().Add(hub.PasswordChangeWindow))
	if st, _, _ := b.changePassword(pw, "one more new password", "one more new password"); st != http.StatusSeeOther {
		t.Fatalf("a change after the window: %d", st)
	}
}
