package console

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/frank-postage/frank/hub/operators"
	"github.com/frank-postage/frank/hub/web/session"
)

// refusingPeople refuses every login and counts those it was asked about.
type refusingPeople struct{ asked int }

func (p *refusingPeople) Authenticate(context.Context, string, string) (*operators.Operator, error) {
	p.asked++
	return nil, operators.ErrAuth
}
func (p *refusingPeople) ByID(context.Context, int64) (*operators.Operator, error) {
	return nil, operators.ErrAuth
}
func (p *refusingPeople) ByToken(context.Context, string) (*operators.Operator, error) {
	return nil, operators.ErrAuth
}

// A console login name longer than any operator's is a wrong login or
// password without a look: not looked up, not logged, and counted against
// the address alone, which meets its limit.
func TestConsoleLongLoginIsWrongWithoutALook(t *testing.T) {
	people := &refusingPeople{}
	var logged bytes.Buffer
	c := &Console{People: people, Logins: session.NewLogins("console", nil), Log: slog.New(slog.NewTextHandler(&logged, nil))}
	send := func(login string) (int, string) {
		req := httptest.NewRequest("POST", "/login", strings.NewReader(url.Values{"login": {login}, "password": {"wrong password"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		c.login(w, req)
		return w.Code, w.Body.String()
	}
	long := strings.Repeat("x", 60_000)
	for i := range session.AddressFailures {
		if st, body := send(long); st != http.StatusUnauthorized || !strings.Contains(body, "Wrong login or password") {
			t.Fatalf("long login %d: %d, want 401 wrong login or password", i, st)
		}
	}
	if people.asked != 0 {
		t.Errorf("%d long logins were looked up", people.asked)
	}
	if strings.Contains(logged.String(), strings.Repeat("x", session.MaxLogin+1)) {
		t.Errorf("the log carries the long name: %.200s", logged.String())
	}
	if !strings.Contains(logged.String(), "console login failed") {
		t.Errorf("the failures were not logged: %.200s", logged.String())
	}
	if st, _ := send("olga"); st != http.StatusTooManyRequests {
		t.Errorf("after %d long logins the address may go on: %d", session.AddressFailures, st)
	}
}
