package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/frank-postage/frank/testbench/browser"
)

// A customer's account basics in Chromium on the real binaries: register,
// change the password, log out and in with the new one; then, logged out,
// ask for a reset link (the demo shows it: no mail server), follow it, set
// a new password and log in with it; the link refuses a second use. axe-core
// checks each new page, in the states the portal crawl does not reach.
func TestPortalPassword(t *testing.T) {
	browser.NeedAxe(t)
	w := startWeb(t, 1)
	p := openPage(t, w.HubURL(), "/portal/register", w.Fingerprint())
	const login, first, second, third = "pat-forgetful", "a long enough secret", "a second long secret", "a third long secret"
	p.do("register", chromedp.WaitVisible(chromedp.CSS("#login")),
		chromedp.SendKeys(chromedp.CSS("#login"), login),
		chromedp.SendKeys(chromedp.CSS("#password"), first),
		chromedp.SendKeys(chromedp.CSS("#password2"), first),
		chromedp.SendKeys(chromedp.CSS("#zip"), "94544"),
		chromedp.Click(chromedp.CSS("#submit")))
	p.waitPath("/portal/fund")

	p.do("open the password page", chromedp.Click(chromedp.CSS(`header a[href="/portal/password"]`)))
	p.waitPath("/portal/password")
	p.do("the password page", chromedp.WaitVisible(chromedp.CSS("#current-password")))
	p.p.Accessible("portal-password")
	p.do("change the password",
		chromedp.SendKeys(chromedp.CSS("#current-password"), first),
		chromedp.SendKeys(chromedp.CSS("#new-password"), second),
		chromedp.SendKeys(chromedp.CSS("#new-password2"), second),
		chromedp.Click(chromedp.CSS("#submit")))
	p.waitSays("#flash", "Password changed")
	if got := p.text("#error"); got != "" {
		t.Fatalf("the change was refused: %s", got)
	}

	p.do("log out", chromedp.Click(chromedp.CSS("#logout")))
	p.waitPath("/portal/login")
	p.passwordLogin(login, first)
	p.waitSays("#error", "Wrong login or password")
	p.passwordLogin(login, second)
	p.waitPath("/portal/")
	p.waitSays("#balance", login)

	p.do("log out", chromedp.Click(chromedp.CSS("#logout")))
	p.waitPath("/portal/login")
	p.do("forgot the password", chromedp.WaitVisible(chromedp.CSS("#forgot")), chromedp.Click(chromedp.CSS("#forgot")))
	p.waitPath("/portal/forgot")
	p.do("ask for a reset link", chromedp.WaitVisible(chromedp.CSS("#login")),
		chromedp.SendKeys(chromedp.CSS("#login"), login),
		chromedp.Click(chromedp.CSS("#submit")))
	link := p.wait("the reset link", `(document.querySelector("#reset-link") || {}).href || ""`,
		func(v string) bool { return v != "" }, 15*time.Second)
	if !strings.HasPrefix(link, w.HubURL()+"/portal/reset?token=") {
		t.Fatalf("reset link %q", link)
	}
	p.waitSays("#reset-asked", "shown here instead of mailed")
	p.p.Accessible("portal-forgot-link")
	p.do("follow the link", chromedp.Click(chromedp.CSS("#reset-link")))
	p.waitPath("/portal/reset")
	p.do("the reset page", chromedp.WaitVisible(chromedp.CSS("#new-password")))
	p.p.Accessible("portal-reset")
	p.do("set a new password",
		chromedp.SendKeys(chromedp.CSS("#new-password"), third),
		chromedp.SendKeys(chromedp.CSS("#new-password2"), third),
		chromedp.Click(chromedp.CSS("#submit")))
	p.waitPath("/portal/login")
	p.waitSays("#flash", "new password is set")
	p.passwordLogin(login, third)
	p.waitPath("/portal/")
	p.waitSays("#balance", login)

	if got := p.open(strings.TrimPrefix(link, w.HubURL())); got != http.StatusGone {
		t.Fatalf("the used link answered %d, want %d", got, http.StatusGone)
	}
	p.waitSays("#error", "already used")
	p.p.Accessible("portal-reset-used")
	if v, _ := p.eval(`document.querySelector("#new-password") ? "form" : ""`); v != "" {
		t.Fatal("a used link still offers the form")
	}
}

// passwordLogin fills the portal's login form, from any page.
func (p *page) passwordLogin(login, password string) {
	p.t.Helper()
	if got := p.open("/portal/login"); got != http.StatusOK {
		p.t.Fatalf("/portal/login: %d", got)
	}
	p.do("log in as "+login, chromedp.WaitVisible(chromedp.CSS("#login")),
		chromedp.SendKeys(chromedp.CSS("#login"), login),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("#submit")))
}

// waitSays waits until the element matching sel says want.
func (p *page) waitSays(sel, want string) {
	p.t.Helper()
	p.wait(sel+" saying "+want, fmt.Sprintf(`(document.querySelector(%q) || {}).innerText || ""`, sel),
		func(v string) bool { return strings.Contains(v, want) }, 15*time.Second)
}
