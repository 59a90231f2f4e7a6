package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/cards"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/postal"
	"github.com/frank-postage/frank/testbench/wait"
)

// loadKiosk sends purchases over MQTT and remembers every answer it got.
type loadKiosk struct {
	id       string
	password string
	sheets   []string // loaded into it; each request takes the next label
	next     int
	c        mqtt.Client
	mu       sync.Mutex
	sent     map[string][]byte // request id -> body, for resends
	got      map[string][]byte // request id -> the result that reached us
	waiting  map[string]chan []byte
	seq      int
}

func newLoadKiosk(t *testing.T, id, password, broker string, sheets []string) *loadKiosk {
	k := &loadKiosk{id: id, sheets: sheets, sent: map[string][]byte{}, got: map[string][]byte{}, waiting: map[string]chan []byte{}}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + broker).SetClientID("load-" + id).SetOrderMatters(false).
		SetUsername(id).SetPassword(password).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).
		SetMaxReconnectInterval(200 * time.Millisecond).
		SetOnConnectHandler(func(c mqtt.Client) {
			c.Subscribe(protocol.KioskTopic(id, protocol.TopicPurchaseResult), 1, k.onResult)
		})
	k.c = mqtt.NewClient(opts)
	k.c.Connect()
	t.Cleanup(func() { k.c.Disconnect(50) })
	return k
}

func (k *loadKiosk) onResult(_ mqtt.Client, m mqtt.Message) {
	var r struct {
		RequestID string `json:"request_id"`
	}
	if json.Unmarshal(m.Payload(), &r) != nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if prev, ok := k.got[r.RequestID]; ok && !bytes.Equal(prev, m.Payload()) {
		// Recorded as a second answer; the test compares them.
		k.got[r.RequestID+"#again"] = m.Payload()
	}
	if _, ok := k.got[r.RequestID]; !ok {
		k.got[r.RequestID] = append([]byte(nil), m.Payload()...)
	}
	if ch := k.waiting[r.RequestID]; ch != nil {
		delete(k.waiting, r.RequestID)
		ch <- m.Payload()
	}
}

// ask sends a purchase (new, or a resend of id) and waits a little.
func (k *loadKiosk) ask(id string, wait time.Duration) {
	k.mu.Lock()
	body, ok := k.sent[id]
	if !ok {
		k.seq++
		var r protocol.PurchaseRequest
		json.Unmarshal([]byte(prototest.GoodPurchase), &r)
		r.RequestID, r.KioskID = id, k.id
		r.Items[0].LabelSerial = fmt.Sprintf("%s-%02d", k.sheets[k.next/10], k.next%10+1)
		k.next++
		body, _ = json.Marshal(r)
		k.sent[id] = body
	}
	ch := make(chan []byte, 1)
	k.waiting[id] = ch
	k.mu.Unlock()
	k.c.Publish(protocol.KioskTopic(k.id, protocol.TopicPurchase), 1, false, body)
	select {
	case <-ch:
	case <-time.After(wait):
	}
}

// unanswered returns the requests sent that got no result yet.
func (k *loadKiosk) unanswered() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for id := range k.sent {
		if _, ok := k.got[id]; !ok {
			out = append(out, id)
		}
	}
	return out
}

// TestHubSurvivesKill9 kills the hub with SIGKILL at random moments under a
// load of purchases, 24 times. After each kill `hub ledger check` must pass;
// at the end every result that reached a kiosk is in the ledger exactly once
// with the same bytes, and the requests that got no answer, resent with
// their request_ids, each get one.
func TestHubSurvivesKill9(t *testing.T) {
	rounds := 24
	dir := t.TempDir()
	pa, err := postal.New("", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	paSrv := httptest.NewServer(pa.Handler())
	defer paSrv.Close()
	gw := cards.New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	gwSrv := httptest.NewServer(gw.Handler())
	defer gwSrv.Close()
	httpAddr, _ := demo.FreeAddr()
	brokerAddr, _ := demo.FreeAddr()
	hubCmd := func(args ...string) string {
		out, err := exec.Command(filepath.Join(binDir, "hub"), append(args, "--data", dir, "--postal", paSrv.URL, "--licence", postal.DemoLicence, "--log", "text")...).Output()
		if err != nil {
			t.Fatalf("hub %s %s: %v", args[0], args[1], err)
		}
		return string(out)
	}
	logPath := filepath.Join(t.TempDir(), "hub.log")
	hubLog, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer hubLog.Close()
	start := func() *exec.Cmd {
		cmd := exec.Command(filepath.Join(binDir, "hub"), "--data", dir, "--http", httpAddr, "--broker-listen", brokerAddr,
			"--postal", paSrv.URL, "--payments", gwSrv.URL, "--lease-ttl", "2s", "--log", "text", "--licence", postal.DemoLicence,
			"--kiosk-msg-rate", "-1", // these load kiosks send faster than a real one
			"--kiosk-passwords", "--tls", "off", "--broker-tls-listen", "off") // bare MQTT kiosks with passwords

		out := io.MultiWriter(hubLog, output(t))
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if err := demo.WaitHTTP(context.Background(), "http://"+httpAddr+"/healthz", 30*time.Second); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("hub did not start: %v\nthe hub's last lines:\n%s", err, lastLines(logPath, 30))
		}
		return cmd
	}
	check := func(round int) {
		out, err := exec.Command(filepath.Join(binDir, "hub"), "ledger", "check", "--data", dir, "--log", "text").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "ledger ok") {
			t.Fatalf("round %d: hub ledger check after kill -9: %v\n%s", round, err, out)
		}
	}

	kiosks := make([]*loadKiosk, 4)
	for i := range kiosks {
		id := fmt.Sprintf("crash-%d", i)
		out := hubCmd("kiosk", "add", id, "--store", "crash-store", "--kiosk-passwords")
		pw := password(t, out)
		sheets := strings.Fields(hubCmd("stock", "issue", "--store", "crash-store", "--sheets", "600"))
		hubCmd(append([]string{"stock", "load", "--kiosk", id}, sheets...)...)
		kiosks[i] = &loadKiosk{id: id, sheets: sheets}
		kiosks[i].password = pw
	}
	cmd := start()
	for i, k := range kiosks {
		kiosks[i] = newLoadKiosk(t, k.id, k.password, brokerAddr, k.sheets)
	}
	var seq atomic.Int64
	for round := range rounds {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for _, k := range kiosks {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					k.ask(fmt.Sprintf("r%d-%d", round, seq.Add(1)), 300*time.Millisecond)
				}
			})
		}
		time.Sleep(time.Duration(50+rand.IntN(400)) * time.Millisecond) // pace: a kill at a random moment of the load
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		close(stop)
		wg.Wait()
		check(round)
		cmd = start()
	}
	// Resend everything that was never answered, with the same ids, as a
	// kiosk does until it hears back: an answer sent while the kiosk was
	// still resubscribing after the last restart is lost to it.
	for _, k := range kiosks {
		for try := 0; try < 5 && len(k.unanswered()) > 0; try++ {
			for _, id := range k.unanswered() {
				k.ask(id, 3*time.Second)
			}
		}
	}
	// The killed hubs' open payments are settled by the hub that runs now,
	// once their liveness leases lapse (twice --lease-ttl): within that and
	// 10 s, with no restart.
	if err := wait.Poll(2*2*time.Second+10*time.Second, func() error {
		if n := gw.Totals().Open; n != 0 {
			return fmt.Errorf("%d authorizations still open", n)
		}
		return nil
	}); err != nil {
		t.Errorf("%v %s after the last kill", err, 14*time.Second)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	check(rounds)

	db, err := store.Open(context.Background(), filepath.Join(dir, "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	answered, okSales := 0, 0
	for _, k := range kiosks {
		if len(k.unanswered()) != 0 {
			t.Errorf("%s: %d requests never answered, even after restart", k.id, len(k.unanswered()))
		}
		k.mu.Lock()
		for id, res := range k.got {
			if strings.HasSuffix(id, "#again") {
				t.Errorf("%s: request %s answered twice with different bytes", k.id, strings.TrimSuffix(id, "#again"))
				continue
			}
			answered++
			var n int
			var stored []byte
			err := db.QueryRow(`SELECT COUNT(*), MAX(result) FROM sales WHERE kiosk_id = ? AND request_id = ?`, k.id, id).Scan(&n, &stored)
			r, derr := protocol.DecodePurchaseResult(res)
			switch {
			case err != nil || derr != nil:
				t.Errorf("%s/%s: %v %v", k.id, id, err, derr)
			case r.Status == protocol.ResultOK && (n != 1 || !bytes.Equal(stored, res)):
				t.Errorf("%s/%s: a sale that reached the kiosk is in the ledger %d times (bytes equal: %v)", k.id, id, n, bytes.Equal(stored, res))
			case r.Status == protocol.ResultOK:
				okSales++
				var ind int
				db.QueryRow(`SELECT COUNT(*) FROM indicia WHERE kiosk_id = ? AND request_id = ?`, k.id, id).Scan(&ind)
				if ind != 1 {
					t.Errorf("%s/%s: %d indicia, want 1", k.id, id, ind)
				}
			}
		}
		k.mu.Unlock()
	}
	var total int
	var postage int64
	db.QueryRow(`SELECT COUNT(*), COALESCE(SUM(total), 0) FROM sales WHERE status = 'ok'`).Scan(&total, &postage)
	if total != okSales {
		t.Errorf("ledger has %d sales, kiosks received %d", total, okSales)
	}
	// Across every kill, customers paid for exactly the sales recorded, and
	// no authorization was left open.
	if tot := gw.Totals(); tot.Captured != postage || tot.Open != 0 {
		t.Errorf("card gateway captured %d with %d open authorizations; the ledger sold %d", tot.Captured, tot.Open, postage)
	}
	t.Logf("%d kills; %d requests answered, %d sales, all in the ledger once", rounds, answered, okSales)
}
