package front_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/frank-postage/frank/hub/broker"
	"github.com/frank-postage/frank/hub/front"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// noKiosks is a fleet with no kiosk logins: only the hub's user connects.
type noKiosks struct{}

func (noKiosks) Authenticate(string, string, bool) (string, bool)  { return "", false }
func (noKiosks) Stamps(context.Context) (map[string]string, error) { return nil, nil }

// noSales answers nothing: this test sends no request.
type noSales struct{}

func (noSales) Purchase(context.Context, string, []byte) ([]byte, *protocol.Error) { return nil, nil }
func (noSales) Refund(context.Context, string, []byte) ([]byte, *protocol.Error)   { return nil, nil }
func (noSales) Answer(context.Context, string, []byte) ([]byte, *protocol.Error)   { return nil, nil }

// Two pushes of one kiosk's config at once: the one that read the config
// first publishes first, so the config left retained for the kiosk is the
// newer. (CI once saw the kiosk's staff list go back to an older one: the
// push when the kiosk came online read the config before a change and
// published after the change's own push.)
func TestConfigPushesKeepTheirOrder(t *testing.T) {
	b, err := broker.Start(broker.Config{Addr: "127.0.0.1:0", HubUser: "frank-hub", HubPassword: "pw", Kiosks: noKiosks{}},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	topic := protocol.KioskTopic("k1", protocol.TopicConfig)

	// seen gets every config version published for k1.
	seen := make(chan int, 16)
	watch := dial(t, b.Addr(), "frank-hub-watch")
	if tok := watch.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
		var c protocol.KioskConfig
		if json.Unmarshal(m.Payload(), &c) == nil {
			seen <- c.HeartbeatS
		}
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	// The config's version is its heartbeat. The first push reads version
	// 1, then stalls until version 2 has been published, or 500 ms: a push
	// that may not start before it finishes does not come in that time.
	var version, reads atomic.Int32
	version.Store(1)
	newer := make(chan struct{})
	configFor := func(id string) (protocol.KioskConfig, error) {
		c := protocol.KioskConfig{KioskID: id, HeartbeatS: int(version.Load())}
		if reads.Add(1) == 1 {
			version.Store(2) // the change the second push is for
			select {
			case <-newer:
			case <-time.After(500 * time.Millisecond):
			}
		}
		return c, nil
	}
	f, err := front.Start(front.Config{Broker: "tcp://" + b.Addr(), ClientID: "frank-hub-front", Username: "frank-hub", Password: "pw",
		ConfigFor: configFor}, noSales{}, noSales{}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	var wg sync.WaitGroup
	wg.Go(func() { f.PushConfig("k1") })
	wait.For(t, 5*time.Second, "the first push to read the config", func() bool { return reads.Load() > 0 })
	wg.Go(func() { f.PushConfig("k1") })
	wg.Go(func() {
		for v := range seen {
			if v == 2 {
				close(newer)
				return
			}
		}
	})
	wg.Wait()

	// What a kiosk connecting now is given.
	fresh := dial(t, b.Addr(), "frank-hub-fresh")
	retained := make(chan int, 1)
	fresh.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
		var c protocol.KioskConfig
		if json.Unmarshal(m.Payload(), &c) == nil {
			select {
			case retained <- c.HeartbeatS:
			default:
			}
		}
	})
	select {
	case v := <-retained:
		if v != 2 {
			t.Fatalf("the retained config is version %d, published after version 2; want 2", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no retained config")
	}
}

func dial(t *testing.T, addr, id string) mqtt.Client {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetUsername("frank-hub").SetPassword("pw").SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// slowSales holds every purchase until release is closed, counting each
// kiosk's purchases in progress.
type slowSales struct {
	noSales
	release chan struct{}
	mu      sync.Mutex
	busy    map[string]int
}

func (s *slowSales) Purchase(_ context.Context, kiosk string, _ []byte) ([]byte, *protocol.Error) {
	s.mu.Lock()
	s.busy[kiosk]++
	s.mu.Unlock()
	<-s.release
	return []byte(`{}`), nil
}

func (s *slowSales) inProgress(kiosk string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.busy[kiosk]
}

// One kiosk that sends many purchases that are slow to serve (a stolen
// one) holds at most MaxPerKiosk of the front's slots: the rest are dropped
// unanswered (a kiosk sends a request again after its deadline), and
// another kiosk's purchase is still served.
func TestOneKioskCannotTakeEverySlot(t *testing.T) {
	b, err := broker.Start(broker.Config{Addr: "127.0.0.1:0", HubUser: "frank-hub", HubPassword: "pw", Kiosks: noKiosks{}},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sales := &slowSales{release: make(chan struct{}), busy: map[string]int{}}
	f, err := front.Start(front.Config{Broker: "tcp://" + b.Addr(), ClientID: "frank-hub-front", Username: "frank-hub", Password: "pw",
		MaxInFlight: 4, MaxPerKiosk: 2, ConfigFor: func(id string) (protocol.KioskConfig, error) { return protocol.KioskConfig{KioskID: id}, nil }},
		sales, sales, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		close(sales.release)
		f.Close()
	}()
	c := dial(t, b.Addr(), "frank-hub-load")
	for range 10 {
		c.Publish(protocol.KioskTopic("k1", protocol.TopicPurchase), 1, false, []byte(`{}`)).Wait()
	}
	wait.For(t, 10*time.Second, "k1's purchases beyond 2 dropped", func() bool { return f.Shed() == 8 && sales.inProgress("k1") == 2 })
	c.Publish(protocol.KioskTopic("k2", protocol.TopicPurchase), 1, false, []byte(`{}`)).Wait()
	wait.For(t, 10*time.Second, "k2's purchase served", func() bool { return sales.inProgress("k2") == 1 })
	if got := sales.inProgress("k1"); got != 2 {
		t.Fatalf("k1 has %d purchases in progress, want at most 2", got)
	}
}

// Behind a broker that keeps no per-kiosk budget (mosquitto), the front
// keeps the embedded broker's: one kiosk's messages past KioskBurst, and
// then past KioskRate a second, are dropped unread; another kiosk's are
// handled, and the kiosk's budget comes back with time.
func TestKioskMessagesOverBudgetDropped(t *testing.T) {
	b, err := broker.Start(broker.Config{Addr: "127.0.0.1:0", HubUser: "frank-hub", HubPassword: "pw", Kiosks: noKiosks{}},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var now atomic.Int64
	now.Store(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC).UnixNano())
	sales := &slowSales{release: make(chan struct{}), busy: map[string]int{}}
	f, err := front.Start(front.Config{Broker: "tcp://" + b.Addr(), ClientID: "frank-hub-front", Username: "frank-hub", Password: "pw",
		MaxInFlight: 64, MaxPerKiosk: -1, KioskRate: 1, KioskBurst: 3, Now: func() time.Time { return time.Unix(0, now.Load()) },
		ConfigFor: func(id string) (protocol.KioskConfig, error) { return protocol.KioskConfig{KioskID: id}, nil }},
		sales, sales, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		close(sales.release)
		f.Close()
	}()
	c := dial(t, b.Addr(), "frank-hub-load") // a hub's login: the embedded broker's budget does not apply
	for range 10 {
		c.Publish(protocol.KioskTopic("k1", protocol.TopicPurchase), 1, false, []byte(`{}`)).Wait()
	}
	wait.For(t, 10*time.Second, "k1's messages past its burst dropped", func() bool { return f.OverBudget() == 7 && sales.inProgress("k1") == 3 })
	c.Publish(protocol.KioskTopic("k2", protocol.TopicPurchase), 1, false, []byte(`{}`)).Wait()
	wait.For(t, 10*time.Second, "k2's purchase served", func() bool { return sales.inProgress("k2") == 1 })
	now.Add(int64(time.Second))
	c.Publish(protocol.KioskTopic("k1", protocol.TopicPurchase), 1, false, []byte(`{}`)).Wait()
	wait.For(t, 10*time.Second, "k1's next purchase a second on served", func() bool { return sales.inProgress("k1") == 4 })
	if got := f.OverBudget(); got != 7 {
		t.Fatalf("%d messages dropped, want 7", got)
	}
}

// A kiosk's status is retained and sent once, its last will by the broker:
// one that changes it is handled over the kiosk's message budget too, and
// only a repeat is dropped.
func TestStatusChangeHandledOverBudget(t *testing.T) {
	b, err := broker.Start(broker.Config{Addr: "127.0.0.1:0", HubUser: "frank-hub", HubPassword: "pw", Kiosks: noKiosks{}},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	seen := &presenceSeen{}
	sales := &slowSales{release: make(chan struct{}), busy: map[string]int{}}
	f, err := front.Start(front.Config{Broker: "tcp://" + b.Addr(), ClientID: "frank-hub-front", Username: "frank-hub", Password: "pw",
		MaxInFlight: 64, MaxPerKiosk: -1, KioskRate: 1, KioskBurst: 3, Now: func() time.Time { return now }, Presence: seen,
		ConfigFor: func(id string) (protocol.KioskConfig, error) { return protocol.KioskConfig{KioskID: id}, nil }},
		sales, sales, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		close(sales.release)
		f.Close()
	}()
	c := dial(t, b.Addr(), "frank-hub-load")
	status := func(s string) {
		c.Publish(protocol.KioskTopic("k1", protocol.TopicStatus), 1, false, []byte(s)).Wait()
	}
	status(protocol.StatusOnline)
	wait.For(t, 10*time.Second, "k1's online handled", func() bool { return seen.count("online k1") == 1 })
	for range 3 { // the rest of its budget, and one over
		c.Publish(protocol.KioskTopic("k1", protocol.TopicPurchase), 1, false, []byte(`{}`)).Wait()
	}
	wait.For(t, 10*time.Second, "k1 over its budget", func() bool { return f.OverBudget() == 1 })
	status(protocol.StatusOffline) // its last will
	wait.For(t, 10*time.Second, "k1's offline handled over its budget", func() bool { return seen.count("offline k1") == 1 })
	status(protocol.StatusOffline)
	wait.For(t, 10*time.Second, "k1's repeated offline dropped", func() bool { return f.OverBudget() == 2 })
	if n := seen.count("offline k1"); n != 1 {
		t.Fatalf("k1's offline handled %d times, want the change once", n)
	}
	// A kiosk flipping its status over its budget gets nothing more
	// through: an online over it is dropped, so every offline repeats.
	for range 10 {
		status(protocol.StatusOnline)
		status(protocol.StatusOffline)
	}
	wait.For(t, 10*time.Second, "k1's flips dropped", func() bool { return f.OverBudget() == 22 })
	if on, off := seen.count("online k1"), seen.count("offline k1"); on != 1 || off != 1 {
		t.Fatalf("k1 flipping over its budget handled %d onlines and %d offlines, want 1 and 1", on, off)
	}
}

// presenceSeen counts what the front told of kiosks' presence, as "online
// ID" or "offline ID".
type presenceSeen struct {
	mu   sync.Mutex
	seen map[string]int
}

func (p *presenceSeen) note(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen == nil {
		p.seen = map[string]int{}
	}
	p.seen[s]++
}

func (p *presenceSeen) count(s string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen[s]
}

func (p *presenceSeen) Online(id string)                { p.note("online " + id) }
func (p *presenceSeen) Offline(id string)               { p.note("offline " + id) }
func (p *presenceSeen) Heartbeat(t *protocol.Telemetry) {}
