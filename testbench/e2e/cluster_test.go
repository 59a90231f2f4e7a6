package e2e

import (
	"bufio"
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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/hub/stock"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/protocol/prototest"
	"github.com/frank-postage/frank/testbench/cards"
	"github.com/frank-postage/frank/testbench/demo"
	"github.com/frank-postage/frank/testbench/pgtest"
	"github.com/frank-postage/frank/testbench/postal"
	"github.com/frank-postage/frank/testbench/wait"
)

// clusterKiosk is a kiosk of the soak: it sells one purchase at a time,
// resends it with the same request_id until it gets a final answer, sends
// one in ten twice at once (the broker gives the copies to different
// hubs), and sends a heartbeat every period.
type clusterKiosk struct {
	id     string
	sheets []protocol.SheetSerial
	next   int
	c      mqtt.Client

	mu      sync.Mutex
	final   map[string][]byte // request id -> the final answer
	differ  []string          // requests that got two different final answers
	waiting map[string]chan bool
	sent    atomic.Int64
	dups    atomic.Int64
}

func (k *clusterKiosk) onResult(_ mqtt.Client, m mqtt.Message) {
	var r struct {
		RequestID string          `json:"request_id"`
		Status    string          `json:"status"`
		Error     *protocol.Error `json:"error"`
	}
	if json.Unmarshal(m.Payload(), &r) != nil {
		return
	}
	final := r.Status == protocol.ResultOK || r.Error != nil && !ledger.Retryable(r.Error.Code)
	k.mu.Lock()
	defer k.mu.Unlock()
	if final {
		if prev, ok := k.final[r.RequestID]; ok && !bytes.Equal(prev, m.Payload()) {
			k.differ = append(k.differ, r.RequestID)
		} else if !ok {
			k.final[r.RequestID] = slices.Clone(m.Payload())
		}
	}
	if ch := k.waiting[r.RequestID]; ch != nil {
		select {
		case ch <- final:
		default:
		}
	}
}

// buy sells one stamp: it sends the request until a final answer comes,
// or until giveUp.
func (k *clusterKiosk) buy(id string, giveUp time.Time) bool {
	var r protocol.PurchaseRequest
	json.Unmarshal([]byte(prototest.GoodPurchase), &r)
	r.RequestID, r.KioskID = id, k.id
	r.Items[0].LabelSerial = protocol.LabelSerial{Sheet: k.sheets[k.next/10], Position: uint8(k.next%10 + 1)}.String()
	k.next++
	body, _ := json.Marshal(r)
	ch := make(chan bool, 4)
	k.mu.Lock()
	k.waiting[id] = ch
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		delete(k.waiting, id)
		k.mu.Unlock()
	}()
	topic := protocol.KioskTopic(k.id, protocol.TopicPurchase)
	for first := true; time.Now().Before(giveUp); first = false {
		k.c.Publish(topic, 1, false, body)
		k.sent.Add(1)
		if first && rand.IntN(10) == 0 {
			k.c.Publish(topic, 1, false, body) // a duplicate delivery, most likely to another hub
			k.dups.Add(1)
		}
		select {
		case final := <-ch:
			if final {
				return true
			}
			time.Sleep(200 * time.Millisecond) // pace: not final, the kiosk asks again soon
		case <-time.After(3 * time.Second): // the kiosk's deadline
		}
	}
	return false
}

// heartbeat publishes the kiosk's telemetry.
func (k *clusterKiosk) heartbeat() {
	t := protocol.Telemetry{KioskID: k.id, At: time.Now().UTC(), Firmware: "soak", LabelsLeft: 100, Paper: "ok", Printer: "ok", Scale: "ok", InService: true}
	b, _ := json.Marshal(t)
	k.c.Publish(protocol.KioskTopic(k.id, protocol.TopicTelemetry), 1, false, b)
}

// TestClusterSoak is the cluster's acceptance test: three hubs on one
// PostgreSQL primary with a synchronous standby, behind mosquitto, under
// 200 kiosk connections that resend on their deadline and deliver one
// request in ten twice at once. A random hub is killed with SIGKILL every
// 10 s and restarted, 12 times; the broker is restarted once; the primary
// is killed and the standby promoted once. At the end every request has
// one final answer, every sale is in the ledger once with the bytes the
// kiosk got, the card gateway's totals are the database's with no hold
// left open, the ledger check is clean, and no kiosk was alerted offline.
func TestClusterSoak(t *testing.T) {
	const (
		hubs     = 3
		nKiosks  = 200
		kills    = 12
		killGap  = 10 * time.Second
		leaseTTL = 2 * time.Second // hubs' liveness lapses after twice this
	)
	kioskCount, killCount := nKiosks, kills
	if os.Getenv("FRANK_SOAK_SMALL") != "" { // a quick look while developing
		kioskCount, killCount = 40, 3
	}
	ctx := context.Background()
	dir := t.TempDir()
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))

	// PostgreSQL: a primary and a synchronous standby.
	primary, err := pgtest.Start()
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	defer primary.Stop()
	if _, err := primary.NewDatabase("frank"); err != nil {
		t.Fatal(err)
	}
	standby, err := primary.StartStandby()
	if err != nil {
		t.Fatal(err)
	}
	defer standby.Stop()
	if err := primary.SyncStandby(); err != nil {
		t.Fatal(err)
	}
	dsn := pgtest.MultiHostURL("frank", primary, standby)

	// The fleet and its stock, written straight into the database.
	db, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	st, reg := stock.New(db, nil), fleet.New(db)
	if err := st.AddStore(ctx, "soak", "Soak store"); err != nil {
		t.Fatal(err)
	}
	kiosks := make([]*clusterKiosk, kioskCount)
	for i := range kiosks {
		k := &clusterKiosk{id: fmt.Sprintf("soak-%03d", i), final: map[string][]byte{}, waiting: map[string]chan bool{}}
		if _, err := reg.Add(ctx, k.id, "soak"); err != nil {
			t.Fatal(err)
		}
		if k.sheets, err = st.Issue(ctx, "soak", 40); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Load(ctx, k.id, k.sheets); err != nil {
			t.Fatal(err)
		}
		kiosks[i] = k
	}
	db.Close()

	// Mosquitto, with a user per hub and per kiosk.
	m := newMosquitto(t, dir, true)
	acl, err := os.ReadFile(filepath.Join(m.etc, "frank.acl"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= hubs; i++ {
		acl = fmt.Appendf(acl, "\nuser frank-hub-%d\ntopic readwrite frank/v1/#\n", i)
		m.setPassword(fmt.Sprintf("frank-hub-%d", i), m.hubPassword)
	}
	m.write("frank.acl", string(acl))
	var pw strings.Builder
	for _, k := range kiosks {
		fmt.Fprintf(&pw, "%s:soak-password\n", k.id)
	}
	passwd := filepath.Join(m.etc, "frank.passwd")
	old, _ := os.ReadFile(passwd)
	plain := filepath.Join(m.etc, "kiosks.plain")
	if err := os.WriteFile(plain, []byte(pw.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(m.passwd, "-U", plain).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd -U: %v: %s", err, out)
	}
	hashed, _ := os.ReadFile(plain)
	if err := os.WriteFile(passwd, append(old, hashed...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := m.start(); err != nil {
		t.Fatal(err)
	}

	// The authority and the card gateway, in this process.
	pa, err := postal.New("", discard)
	if err != nil {
		t.Fatal(err)
	}
	paSrv := httptest.NewServer(pa.Handler())
	defer paSrv.Close()
	gw := cards.New(discard)
	gwSrv := httptest.NewServer(gw.Handler())
	defer gwSrv.Close()

	// The hubs share one data directory: the development key store, as
	// they would share an HSM.
	data := filepath.Join(dir, "hub")
	addrs := make([]string, hubs)
	procs := make([]*exec.Cmd, hubs)
	logs := make([]*os.File, hubs)
	start := func(i int) {
		if addrs[i] == "" {
			addrs[i], _ = demo.FreeAddr()
		}
		user := "frank-hub"
		if i > 0 {
			user = fmt.Sprintf("frank-hub-%d", i+1)
		}
		if logs[i] == nil {
			if logs[i], err = os.Create(filepath.Join(dir, fmt.Sprintf("hub%d.log", i+1))); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(filepath.Join(binDir, "hub"), "--data", data, "--db", dsn, "--http", addrs[i], "--tls", "off",
			"--broker", "tcp://"+m.addr, "--broker-user", user, "--hub-name", user, "--broker-tls-listen", "off",
			"--postal", paSrv.URL, "--payments", gwSrv.URL, "--licence", postal.DemoLicence, "--lease-ttl", leaseTTL.String(),
			"--heartbeat", "5", "--report-every", "-1s", "--log", "text")
		cmd.Env = append(os.Environ(), "FRANK_BROKER_PASSWORD="+m.hubPassword)
		cmd.Stdout, cmd.Stderr = logs[i], logs[i]
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if err := demo.WaitHTTP(ctx, "http://"+addrs[i]+"/healthz", 60*time.Second); err != nil {
			cmd.Process.Kill()
			t.Fatalf("hub %d did not start: %v\n%s", i+1, err, errorLines(filepath.Join(dir, fmt.Sprintf("hub%d.log", i+1))))
		}
		procs[i] = cmd
	}
	defer func() {
		for i, p := range procs {
			if p != nil {
				p.Process.Signal(syscall.SIGTERM)
				p.Wait()
			}
			if t.Failed() {
				log := filepath.Join(dir, fmt.Sprintf("hub%d.log", i+1))
				t.Logf("hub %d errors:\n%s", i+1, errorLines(log))
				keepArtefact(t, log)
			}
		}
	}()
	for i := range hubs {
		start(i) // the first alone: it runs the key ceremony
	}

	// The kiosks connect, and sell until told to stop.
	for _, k := range kiosks {
		opts := mqtt.NewClientOptions().AddBroker("tcp://" + m.addr).SetClientID(k.id).SetUsername(k.id).SetPassword("soak-password").
			SetOrderMatters(false).SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).
			SetMaxReconnectInterval(time.Second).
			SetOnConnectHandler(func(c mqtt.Client) {
				c.Subscribe(protocol.KioskTopic(k.id, protocol.TopicPurchaseResult), 1, k.onResult)
			})
		k.c = mqtt.NewClient(opts)
		if tok := k.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("kiosk %s: %v", k.id, tok.Error())
		}
		defer k.c.Disconnect(50)
	}
	stop, beating := make(chan struct{}), make(chan struct{})
	var load, beats sync.WaitGroup
	defer func() { close(beating); beats.Wait() }()
	var unfinished atomic.Int64
	for i, k := range kiosks {
		load.Go(func() {
			k.heartbeat()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if !k.buy(fmt.Sprintf("s%d-%d", i, n), time.Now().Add(90*time.Second)) {
					unfinished.Add(1)
				}
				time.Sleep(time.Duration(200+rand.IntN(600)) * time.Millisecond) // pace: the next customer
			}
		})
		// Heartbeats keep coming while a purchase waits, and after the
		// load, until the checks are done.
		beats.Go(func() {
			beat := time.NewTicker(5 * time.Second)
			defer beat.Stop()
			for {
				select {
				case <-beating:
					return
				case <-beat.C:
					k.heartbeat()
				}
			}
		})
	}

	// The chaos.
	for n := range killCount {
		time.Sleep(killGap) // pace: the chaos's schedule
		switch n {
		case killCount / 3:
			m.kill()
			if err := m.start(); err != nil {
				t.Fatal(err)
			}
			t.Logf("broker restarted")
		case 2 * killCount / 3:
			primary.Kill()
			if err := standby.Promote(); err != nil {
				t.Fatal(err)
			}
			t.Logf("primary killed, standby promoted")
		}
		i := rand.IntN(hubs)
		procs[i].Process.Signal(syscall.SIGKILL)
		procs[i].Wait()
		procs[i] = nil
		if n == killCount-1 {
			t.Logf("kill %d: hub %d, not restarted", n+1, i+1)
			break // the last one stays dead: the others settle what it left
		}
		start(i)
		t.Logf("kill %d: hub %d", n+1, i+1)
	}
	close(stop)
	load.Wait()
	if n := unfinished.Load(); n > 0 {
		t.Errorf("%d purchases got no final answer in 90 s of resends", n)
	}

	// The killed hubs' holds are settled once their liveness lapses
	// (twice --lease-ttl), by the hubs still running: within that and 10 s.
	// (The totals check below says how many are left, if any.)
	wait.Poll(2*leaseTTL+10*time.Second, func() error {
		if gw.Totals().Open != 0 {
			return fmt.Errorf("holds open")
		}
		return nil
	})

	db, err = store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var sent, dups int64
	answered, okSales := 0, 0
	for _, k := range kiosks {
		sent, dups = sent+k.sent.Load(), dups+k.dups.Load()
		k.mu.Lock()
		for _, id := range k.differ {
			t.Errorf("%s/%s: two different final answers", k.id, id)
		}
		for id, res := range k.final {
			answered++
			r, err := protocol.DecodePurchaseResult(res)
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != protocol.ResultOK {
				continue
			}
			okSales++
			var n, ind int
			var stored []byte
			rows, err := db.QueryContext(ctx, db.Rebind(`SELECT result FROM sales WHERE kiosk_id = ? AND request_id = ? AND status = 'ok'`), k.id, id)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				n++
				rows.Scan(&stored)
			}
			rows.Close()
			db.QueryRowContext(ctx, db.Rebind(`SELECT COUNT(*) FROM indicia WHERE kiosk_id = ? AND request_id = ? AND state <> 'voided'`), k.id, id).Scan(&ind)
			if n != 1 || !bytes.Equal(stored, res) || ind != 1 {
				t.Errorf("%s/%s: an ok sale is in the ledger %d times with %d live indicia (same bytes: %v)", k.id, id, n, ind, bytes.Equal(stored, res))
			}
		}
		k.mu.Unlock()
	}
	var sales int
	var postage int64
	db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(total), 0) FROM sales WHERE status = 'ok'`).Scan(&sales, &postage)
	if sales != okSales {
		t.Errorf("the ledger has %d sales; kiosks were told of %d", sales, okSales)
	}
	var captured, refunded int64
	db.QueryRowContext(ctx, `SELECT COALESCE(SUM(captured), 0), COALESCE(SUM(refunded), 0) FROM payments`).Scan(&captured, &refunded)
	tot := gw.Totals()
	if tot.Captured != captured || tot.Refunded != refunded || tot.Open != 0 || captured != postage {
		t.Errorf("gateway captured %d, refunded %d, %d holds open; the database captured %d, refunded %d, sold %d",
			tot.Captured, tot.Refunded, tot.Open, captured, refunded, postage)
	}
	var offline []string
	rows, err := db.QueryContext(ctx, db.Rebind(`SELECT subject FROM alerts WHERE kind = ?`), "kiosk_offline")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		rows.Scan(&s)
		offline = append(offline, s)
	}
	rows.Close()
	if len(offline) > 0 {
		t.Errorf("%d kiosks that kept sending heartbeats were alerted offline: %v", len(offline), offline[:min(len(offline), 10)])
	}
	out, err := exec.Command(filepath.Join(binDir, "hub"), "ledger", "check", "--data", data, "--db", dsn, "--log", "text").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ledger ok") {
		t.Errorf("hub ledger check: %v\n%s", err, out)
	}
	t.Logf("%d kiosks, %d hubs: %d sends (%d duplicated at once), %d requests answered, %d sales, %d kills",
		kioskCount, hubs, sent, dups, answered, okSales, killCount)
}

// errorLines returns a hub log's warnings and errors, at most 40.
func errorLines(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
			out = append(out, l)
		}
	}
	if len(out) > 40 {
		out = append(out[:20], append([]string{"..."}, out[len(out)-20:]...)...)
	}
	return strings.Join(out, "\n")
}

// lastLines returns the last n lines of a log.
func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// keepArtefact copies a file into $FRANK_ARTEFACTS (default
// /tmp/frank-artefacts/TESTNAME) for a look after the test.
func keepArtefact(t *testing.T, path string) {
	dir := os.Getenv("FRANK_ARTEFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "frank-artefacts")
	}
	dir = filepath.Join(dir, t.Name())
	b, err := os.ReadFile(path)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, filepath.Base(path)), b, 0o644)
	}
	if err != nil {
		t.Logf("artefact %s not kept: %v", path, err)
		return
	}
	t.Logf("kept %s", filepath.Join(dir, filepath.Base(path)))
}
