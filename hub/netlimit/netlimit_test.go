package netlimit_test

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/frank-postage/frank/hub/netlimit"
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
			go srv.Serve(netlimit.Listen(ln, 3, proxies.Trusts, slog.New(slog.DiscardHandler)))
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

// A limit counts an IPv6 client's whole /64, which one subscriber holds,
// as one address; an IPv4 client (mapped or not) is its address.
func TestSourceCountsAnIPv6SlashSixtyFour(t *testing.T) {
	for addr, want := range map[net.Addr]string{
		&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2::1"), Port: 5}:       "2001:db8:1:2::/64",
		&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::9"), Port: 6}:  "2001:db8:1:2::/64",
		&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 7, Zone: "eth0"}: "fe80::/64",
		&net.TCPAddr{IP: net.ParseIP("198.51.100.7"), Port: 8}:          "198.51.100.7",
		&net.TCPAddr{IP: net.ParseIP("::ffff:198.51.100.7"), Port: 9}:   "198.51.100.7",
		&net.UnixAddr{Name: "/run/frank.sock", Net: "unix"}:             "/run/frank.sock",
	} {
		if got := netlimit.SourceOf(addr); got != want {
			t.Errorf("SourceOf(%v) = %q, want %q", addr, got, want)
		}
	}
	for ip, want := range map[string]string{
		"2001:db8:1:2:aaaa::1": "2001:db8:1:2::/64",
		"::ffff:198.51.100.7":  "198.51.100.7",
		"198.51.100.7":         "198.51.100.7",
		"not an address":       "not an address",
	} {
		if got := netlimit.Source(ip); got != want {
			t.Errorf("Source(%q) = %q, want %q", ip, got, want)
		}
	}
}
