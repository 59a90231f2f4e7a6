package web_test

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/web"
	"github.com/frank-postage/frank/hub/web/session"
	"github.com/frank-postage/frank/testbench/wait"
)

// One address holds at most its share of the web server's connections:
// the next is closed at once, and a slot comes back when one closes. A
// trusted proxy, behind which every client shares an address, is not
// limited.
func TestConnectionsPerSource(t *testing.T) {
	for _, tc := range []struct {
		name    string
		proxies []string
		limited bool
	}{{"stranger", nil, true}, {"trusted proxy", []string{"127.0.0.1"}, false}} {
		t.Run(tc.name, func(t *testing.T) {
			proxies, err := session.ParseProxies(tc.proxies)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
			go srv.Serve(web.LimitPerSource(ln, 3, proxies, slog.New(slog.DiscardHandler)))
			defer srv.Close()
			var held []net.Conn
			for range 3 {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				held = append(held, c)
			}
			// The server has taken the three once a request on the last is answered.
			if _, err := held[2].Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			held[2].SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := held[2].Read(make([]byte, 64)); err != nil {
				t.Fatalf("third connection: %v", err)
			}
			extra, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer extra.Close()
			extra.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			extra.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = extra.Read(make([]byte, 64))
			if refused := err != nil; refused != tc.limited {
				t.Fatalf("fourth connection: read error %v, want refused %v", err, tc.limited)
			}
			if !tc.limited {
				return
			}
			held[0].Close()
			wait.For(t, 5*time.Second, "a slot back once a connection closed", func() bool {
				resp, err := http.Get("http://" + ln.Addr().String())
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == http.StatusOK
			})
		})
	}
}
