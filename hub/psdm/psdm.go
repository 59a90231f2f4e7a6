// Package psdm runs the postal security device module workers of the
// patent (Fig. 7). Each worker owns one HSM session and checks out up to
// eight MPSDs through leases; it issues indicia against the registers it
// holds, each stamp on the registers its previous stamp left, and hands
// them to the ledger's committer in issue order. The pool hands stamps to
// the workers round-robin (claims 7-9) and reports each worker's status as
// the patent's GetStatus does.
package psdm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/frank-postage/frank/hsm"
	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/protocol"
)

// salesLedger is the ledger as the workers use it.
type salesLedger interface {
	Lease(ctx context.Context, n int) ([]ledger.Slot, error)
	Registers(ctx context.Context, serial uint32) (ledger.Slot, error)
	Renew(ctx context.Context, serials []uint32) (map[uint32]ledger.LeaseState, error)
	Release(ctx context.Context, serials []uint32) error
	Reserve(ctx context.Context, amount protocol.Mills) error
	Unreserve(amount protocol.Mills)
	OpenTicket(s *ledger.Sale) (*ledger.Ticket, error)
	Submit(p *ledger.Part)
	FundingFor(dr, postage protocol.Mills) protocol.Mills
	MaySell(reported time.Time) error
	Config() ledger.Config
}

// Key names the signing key: its HSM label and certificate serial, and
// the public key the postal authority certified under that serial.
type Key struct {
	Label      string
	CertSerial uint32
	// Public is the certified key. A worker refuses to sign with an HSM
	// key of the label whose public half is another (another token or
	// slot, a restored token, a label reused): its stamps would verify
	// against nothing published. It is checked when a worker loads the
	// key, not per stamp: verifying each signature would cost about
	// 0.1 ms of CPU on every sale. Nil skips the check, with a warning,
	// for callers that do not pass it yet.
	Public *ecdsa.PublicKey
}

// Config sizes the pool.
type Config struct {
	Workers        int           // default 2
	MPSDsPerWorker int           // 1 to 8; default 1
	RenewEvery     time.Duration // lease renewal; default a third of the lease TTL
	// Servers, if given, are the PSDM servers to run instead of Workers
	// alike ones: each an HSM session with its own MPSDs.
	Servers []Server
	// SignTimeout bounds each HSM call of a worker; default 5 s. A call
	// past it fails its stamp (service_unavailable), and the worker
	// leaves that session to the call (a PKCS#11 call cannot be
	// cancelled; the session is closed when it returns) and opens
	// another. Without it one hung HSM call holds back every later sale:
	// the committer commits in ticket order.
	SignTimeout time.Duration
	// KeyTimeout is how long SetKey and StopSigning wait for the workers
	// to confirm; default 10 s.
	KeyTimeout time.Duration
	// RetryEvery is how often a worker without a session tries to open
	// one, or tries again to load a key it could not; default 1 s.
	RetryEvery time.Duration
	// AlertEvery is how often, at most, a worker raises its
	// hsm_unavailable alert while signing fails; default a minute.
	AlertEvery time.Duration
	// Alerts, if set, is told when a worker cannot sign (hsm_unavailable,
	// key_mismatch) and when it signs again.
	Alerts Alerter
}

// Alerter raises and clears alerts for ops; hub/alerts.
type Alerter interface {
	Raise(ctx context.Context, kind, subject, message string)
	Clear(ctx context.Context, kind, subject, why string)
}

// Server is one PSDM server of the stored list: its id and how many MPSDs
// (virtual PSDs) it checks out, 1 to MaxMPSDs.
type Server struct {
	ID    int `json:"id"`
	MPSDs int `json:"mpsds"`
}

// MaxMPSDs is the most MPSDs one PSDM server holds (one cryptographic
// module's worth).
const MaxMPSDs = 8

// Status is one worker's GetStatus (the patent's PSDServerStatus: uptime,
// throughput, load and total).
type Status struct {
	Worker     int      `json:"worker"`
	LoadPct    int      `json:"load_pct"` // the patent's Load: % of its virtual PSDs in use (a stamp in flight)
	UptimeS    int64    `json:"uptime_s"`
	Throughput float64  `json:"throughput_per_s"` // indicia per second over the last 10 s
	Load       int      `json:"load"`             // MPSDs checked out
	InFlight   int      `json:"in_flight"`        // stamps signed, not yet committed
	Total      int64    `json:"total"`            // indicia issued since start
	SignErrors int64    `json:"sign_errors"`      // stamps it could not sign since start
	HSMSession bool     `json:"hsm_session"`      // false while its session is lost or abandoned and another opens
	MPSDs      []uint32 `json:"mpsds"`
}

// errSign marks a stamp its server's module could not sign.
var errSign = errors.New("signing failed")

// Errors a caller may act on. A stamp that could not be signed fails with
// errSign and a protocol error service_unavailable: nothing was charged,
// and the same request may be tried again.
var (
	// ErrSignTimeout is an HSM call that did not return within
	// Config.SignTimeout.
	ErrSignTimeout = errors.New("psdm: the HSM did not answer in time")
	// ErrKeyMismatch is an HSM key under the label whose public key is
	// not the certified one.
	ErrKeyMismatch = errors.New("psdm: the HSM's key is not the certified key")
	// errNoSession is a worker whose session is lost, while it opens
	// another.
	errNoSession = errors.New("psdm: no HSM session; opening another")
	// errNoKeySet is a pool told to sign nothing (StopSigning).
	errNoKeySet = errors.New("psdm: no signing key is set")
	// errKeyChanged is a stamp signed while the key changed: it may be
	// the key a compromise just stopped.
	errKeyChanged = errors.New("psdm: the signing key changed while the stamp was signed")
)

// unavailable is what the customer is told of a stamp not signed.
func unavailable() *protocol.Error {
	return protocol.Errorf(protocol.CodeServiceUnavailable, "signing unavailable; try again")
}

// ErrClosed is returned after Close.
var ErrClosed = errors.New("psdm: pool closed")

// Pool is a set of workers.
type Pool struct {
	cfg     Config
	book    salesLedger
	log     *slog.Logger
	workers []*worker
	mu      sync.Mutex // orders Sell's tickets and jobs
	next    uint64     // round-robin position
	seq     uint64     // tickets opened: each job's place in the committer's order
	closed  chan struct{}
	wg      sync.WaitGroup
	key     atomic.Pointer[Key] // the key every worker confirmed it signs with; zero when not
	// want is the key workers may sign with, and its generation: a worker
	// checks it before and after each signature, so SetKey and StopSigning
	// take effect at once, even on a worker stuck in the HSM.
	want          atomic.Pointer[target]
	keyMu         sync.Mutex // orders the changes of want and key
	open          func() (hsm.Session, error)
	warnUnchecked sync.Once
}

// target is a key workers may sign with, numbered by SetKey.
type target struct {
	key Key
	gen uint64
}

// Start opens one HSM session per worker, leases each worker's MPSDs, and
// starts the workers and the lease renewal.
func Start(ctx context.Context, cfg Config, open func() (hsm.Session, error), key Key, b salesLedger, log *slog.Logger) (*Pool, error) {
	if cfg.Workers == 0 {
		cfg.Workers = 2
	}
	if cfg.MPSDsPerWorker == 0 {
		cfg.MPSDsPerWorker = 1
	}
	if len(cfg.Servers) == 0 {
		for i := range cfg.Workers {
			cfg.Servers = append(cfg.Servers, Server{ID: i + 1, MPSDs: cfg.MPSDsPerWorker})
		}
	}
	for _, sv := range cfg.Servers {
		if sv.MPSDs < 1 || sv.MPSDs > MaxMPSDs {
			return nil, fmt.Errorf("psdm: start: server %d with %d MPSDs; want 1 to %d", sv.ID, sv.MPSDs, MaxMPSDs)
		}
	}
	if cfg.RenewEvery == 0 {
		cfg.RenewEvery = b.Config().LeaseTTL / 3
	}
	if cfg.SignTimeout == 0 {
		cfg.SignTimeout = 5 * time.Second
	}
	if cfg.KeyTimeout == 0 {
		cfg.KeyTimeout = 10 * time.Second
	}
	if cfg.RetryEvery == 0 {
		cfg.RetryEvery = time.Second
	}
	if cfg.AlertEvery == 0 {
		cfg.AlertEvery = time.Minute
	}
	p := &Pool{cfg: cfg, book: b, log: log, closed: make(chan struct{}), open: open}
	p.key.Store(&key)
	p.want.Store(&target{key: key, gen: 1})
	for _, sv := range cfg.Servers {
		w, err := p.startWorker(ctx, sv, open, *p.want.Load())
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("psdm: start server %d: %w", sv.ID, err)
		}
		p.workers = append(p.workers, w)
	}
	p.wg.Go(p.renewLoop)
	return p, nil
}

func (p *Pool) startWorker(ctx context.Context, sv Server, open func() (hsm.Session, error), want target) (*worker, error) {
	id := sv.ID
	sess, err := open()
	if err != nil {
		return nil, err
	}
	w := &worker{id: id, pool: p, sess: sess, key: want.key, gen: want.gen, log: p.log.With("worker", id),
		wake: make(chan struct{}, 1), started: time.Now(), done: make(chan struct{})}
	if want.key.Label != "" { // none: the worker signs nothing until SetKey
		if w.signer, err = w.loadSigner(want.key); err != nil {
			if w.sess != nil {
				w.sess.Close()
			}
			close(w.done) // stops a reopen the failure started
			if errors.Is(err, ErrKeyMismatch) {
				w.alertMismatch(err)
			}
			return nil, err
		}
	}
	w.hsmUp.Store(true)
	slots, err := p.book.Lease(ctx, sv.MPSDs)
	if err != nil {
		sess.Close()
		return nil, err
	}
	for _, s := range slots {
		w.slots = append(w.slots, &slot{committed: s, head: s})
	}
	p.wg.Go(func() { defer close(w.done); w.run() })
	return w, nil
}

// Servers lists the PSDM servers running, by id.
func (p *Pool) Servers() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]int, len(p.workers))
	for i, w := range p.workers {
		out[i] = w.id
	}
	return out
}

// snapshot is the workers now; p.mu guards the list.
func (p *Pool) snapshot() []*worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.workers)
}

// Add starts a PSDM server while the pool sells: its own HSM session and
// MPSDs; it takes its share of the next sales.
func (p *Pool) Add(ctx context.Context, sv Server) error {
	if sv.MPSDs < 1 || sv.MPSDs > MaxMPSDs {
		return fmt.Errorf("psdm: add server %d: %d MPSDs; want 1 to %d", sv.ID, sv.MPSDs, MaxMPSDs)
	}
	if slices.Contains(p.Servers(), sv.ID) {
		return fmt.Errorf("psdm: add server %d: it runs already", sv.ID)
	}
	w, err := p.startWorker(ctx, sv, p.open, *p.want.Load())
	if err != nil {
		return fmt.Errorf("psdm: add server %d: %w", sv.ID, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.closed:
		w.closeQueue()
		return ErrClosed
	default:
	}
	p.workers = append(p.workers, w)
	p.log.Info("PSDM server started", "server", sv.ID, "mpsds", sv.MPSDs)
	return nil
}

// Drain takes a PSDM server out of the rotation: it gets no new stamps,
// signs the ones it has, gives its MPSDs back and closes its session. The
// last server is not drained: sales would stop.
func (p *Pool) Drain(ctx context.Context, id int) error {
	p.mu.Lock()
	i := slices.IndexFunc(p.workers, func(w *worker) bool { return w.id == id })
	switch {
	case i < 0:
		p.mu.Unlock()
		return fmt.Errorf("psdm: drain server %d: not running", id)
	case len(p.workers) == 1:
		p.mu.Unlock()
		return fmt.Errorf("psdm: drain server %d: it is the last one; add another first", id)
	}
	w := p.workers[i]
	p.workers = slices.Delete(p.workers, i, i+1)
	w.closeQueue() // under p.mu: no Sell or forward hands it a stamp now
	p.mu.Unlock()
	select {
	case <-w.done:
	case <-ctx.Done():
		return fmt.Errorf("psdm: drain server %d: %w", id, ctx.Err())
	}
	// Its last stamps are submitted; their commits settle the slots, then
	// the leases go back.
	for deadline := time.Now().Add(30 * time.Second); w.inFlight() > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	var serials []uint32
	w.mu.Lock()
	for _, s := range w.slots {
		serials = append(serials, s.committed.Serial)
	}
	w.mu.Unlock()
	if err := p.book.Release(ctx, serials); err != nil {
		p.log.Warn("drained server's leases not released; they expire on their own", "server", id, "err", err)
	}
	p.log.Info("PSDM server drained", "server", id, "total", w.status().Total)
	return nil
}

// forward hands a stamp that from could not sign to the next server, once
// per other server, before the sale fails.
func (p *Pool) forward(from *worker, j job) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if j.tries >= len(p.workers)-1 {
		return false
	}
	i := slices.Index(p.workers, from) // -1 for a worker being drained: every worker is tried
	n := len(p.workers)
	if i < 0 {
		n++
	}
	for k := 1; k < n; k++ {
		to := p.workers[(i+k+len(p.workers))%len(p.workers)]
		if to != from && !slices.Contains(j.tried, to.id) {
			j.tries++
			j.tried = append(slices.Clone(j.tried), from.id)
			if to.enqueue(j) {
				return true
			}
		}
	}
	return false
}

// Sell issues the sale's stamps and waits for the ledger to commit them.
// Stamps go to the workers round-robin. Tickets and jobs are handed out
// under one lock, so every worker sees sales in the same order as the
// committer, and no two sales can wait on each other.
func (p *Pool) Sell(ctx context.Context, s *ledger.Sale) ([]byte, error) {
	a, err := p.Issue(ctx, s)
	return a.Bytes, err
}

// Issue is Sell with the answer typed, for the hub's own channels.
func (p *Pool) Issue(ctx context.Context, s *ledger.Sale) (ledger.Answer, error) {
	p.mu.Lock()
	select {
	case <-p.closed:
		p.mu.Unlock()
		return ledger.Answer{}, ErrClosed
	default:
	}
	t, err := p.book.OpenTicket(s)
	if err != nil {
		p.mu.Unlock()
		return ledger.Answer{}, err
	}
	byWorker := make([][]int, len(p.workers))
	for i := range s.Items {
		w := p.next % uint64(len(p.workers))
		p.next++
		byWorker[w] = append(byWorker[w], i)
	}
	// enqueue never blocks: a worker stuck in the HSM must not hold p.mu,
	// and with it every sale, Status and Drain.
	p.seq++
	var lost []int
	for w, items := range byWorker {
		if len(items) > 0 && !p.workers[w].enqueue(job{ticket: t, sale: s, items: items, seq: p.seq}) {
			lost = append(lost, items...)
		}
	}
	p.mu.Unlock()
	for _, i := range lost { // not reached: a closed worker is out of p.workers
		p.book.Submit(&ledger.Part{Ticket: t, Index: i, Err: unavailable()})
	}
	return t.Wait(ctx)
}

// Status reports every worker.
func (p *Pool) Status() []Status {
	ws := p.snapshot()
	out := make([]Status, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.status())
	}
	return out
}

// Key is the key new stamps are signed with, once every worker confirmed
// it; the zero Key while one has not.
func (p *Pool) Key() Key { return *p.key.Load() }

// Target is the key workers may sign with, confirmed or not: the zero Key
// after StopSigning. A compromise is judged by it, not by Key, which is
// zero while a worker has not confirmed though the others sign.
func (p *Pool) Target() Key { return p.want.Load().key }

// SetKey is SetKeyContext within Config.KeyTimeout.
func (p *Pool) SetKey(key Key) error {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.KeyTimeout)
	defer cancel()
	return p.SetKeyContext(ctx, key)
}

// SetKeyContext has every worker sign with key from its next stamp on, as
// a key rotation asks of a running hub. From the moment it is called no
// worker signs with another key: a worker checks before and after each
// signature, and fails a stamp signed across the change. Stamps already
// queued are signed with the new key. It waits, until ctx ends, for each
// worker to load the key; a worker that cannot (its HSM hung, the key not
// there or not the certified one) signs nothing until it can, and Key is
// then the zero Key, so the next check calls SetKey again.
func (p *Pool) SetKeyContext(ctx context.Context, key Key) error {
	select {
	case <-p.closed:
		return ledger.ErrClosed
	default:
	}
	// keyMu is not held while the workers answer: a compromise's
	// StopSigning must not wait behind a rotation waiting on a hung worker.
	p.keyMu.Lock()
	gen := p.want.Load().gen + 1
	p.want.Store(&target{key: key, gen: gen})
	p.key.Store(&Key{}) // until every worker confirms
	p.keyMu.Unlock()
	if key.Label == "" {
		// Nothing to load, and nothing to wait for: the generation check
		// stops every worker, a hung one included.
		p.log.Warn("signing nothing until a new key is set")
		return nil
	}
	ws := p.snapshot()
	done := make(chan rekeyAck, len(ws)) // a late answer never blocks its worker
	waiting := map[int]bool{}
	for _, w := range ws {
		if w.enqueue(job{rekey: gen, done: done}) {
			waiting[w.id] = true
		}
	}
	var errs []error
	for len(waiting) > 0 {
		select {
		case a := <-done:
			delete(waiting, a.worker)
			if a.err != nil {
				errs = append(errs, fmt.Errorf("server %d: %w", a.worker, a.err))
			}
		case <-ctx.Done():
			for id := range waiting {
				errs = append(errs, fmt.Errorf("server %d did not load it: %w", id, ctx.Err()))
			}
			waiting = nil
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("psdm: set key %d: %w", key.CertSerial, err)
	}
	p.keyMu.Lock()
	if p.want.Load().gen == gen { // not overtaken by a later SetKey
		p.key.Store(&key)
	}
	p.keyMu.Unlock()
	p.log.Info("signing with a new key", "cert_serial", key.CertSerial)
	return nil
}

// StopSigning has every worker sign nothing from its next stamp on, until
// a later SetKey: the key they sign with was compromised, and a stamp it
// signs is void. It does not wait on the workers: a stamp in the HSM now
// is failed when it comes back.
func (p *Pool) StopSigning() error { return p.SetKey(Key{}) }

// StopSigningContext is StopSigning; ctx is for symmetry with
// SetKeyContext (StopSigning never waits).
func (p *Pool) StopSigningContext(ctx context.Context) error { return p.SetKeyContext(ctx, Key{}) }

type rekeyAck struct {
	worker int
	err    error
}

// Close stops the workers after their current job, releases the leases and
// closes the sessions.
func (p *Pool) Close() {
	select {
	case <-p.closed:
		return
	default:
	}
	p.mu.Lock()
	close(p.closed)
	for _, w := range p.workers {
		w.closeQueue() // no Sell can send now
	}
	p.mu.Unlock()
	// Each worker finishes its queue; an HSM call holds it up to
	// SignTimeout, and then its stamps fail at once.
	p.wg.Wait()
	var serials []uint32
	for _, w := range p.workers {
		for _, s := range w.slots {
			serials = append(serials, s.committed.Serial)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.book.Release(ctx, serials); err != nil {
		p.log.Warn("leases not released; they expire on their own", "err", err)
	}
}

// renewLoop keeps the leases alive and learns of MPSDs that were locked
// or reported meanwhile.
func (p *Pool) renewLoop() {
	t := time.NewTicker(p.cfg.RenewEvery)
	defer t.Stop()
	for {
		select {
		case <-p.closed:
			return
		case <-t.C:
		}
		var serials []uint32
		ws := p.snapshot()
		for _, w := range ws {
			w.mu.Lock()
			for _, s := range w.slots {
				serials = append(serials, s.committed.Serial)
			}
			w.mu.Unlock()
		}
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.RenewEvery)
		states, err := p.book.Renew(ctx, serials)
		cancel()
		if err != nil {
			p.log.Error("lease renewal failed", "err", err)
			continue
		}
		for _, w := range ws {
			w.apply(states)
		}
	}
}

// RenewNow renews immediately; tests use it with a fake clock.
func (p *Pool) RenewNow(ctx context.Context) error {
	var serials []uint32
	ws := p.snapshot()
	for _, w := range ws {
		w.mu.Lock()
		for _, s := range w.slots {
			serials = append(serials, s.committed.Serial)
		}
		w.mu.Unlock()
	}
	states, err := p.book.Renew(ctx, serials)
	if err != nil {
		return err
	}
	for _, w := range ws {
		w.apply(states)
	}
	return nil
}

type job struct {
	ticket *ledger.Ticket
	sale   *ledger.Sale
	items  []int
	rekey  uint64        // instead: load the key of this SetKey generation
	done   chan rekeyAck // the rekey's outcome
	tries  int           // servers that failed to sign it before
	tried  []int
	seq    uint64 // the ticket's place in the committer's order
}

// slot is an MPSD a worker holds: its registers as committed, and as the
// last stamp issued on it left them.
type slot struct {
	committed ledger.Slot
	head      ledger.Slot
	gen       uint64 // bumped when the chain breaks and head goes back
	// stale: a stamp did not commit as far as the committer knows, and its
	// commit may have happened with the answer lost; committed is read
	// again from the database before the next stamp that finds none in flight.
	stale    bool
	inflight int
	lastSeq  uint64 // the ticket of the last stamp issued on it
	lastIdx  int    // and its item: the committer takes a ticket's items in order
	dead     string // lost lease or locked: never used again
}

type worker struct {
	id      int
	pool    *Pool
	log     *slog.Logger
	started time.Time
	done    chan struct{} // closed when run has returned
	turn    int           // round-robin over the worker's MPSDs

	// The worker's HSM state, its own goroutine's: sess is nil while it
	// opens another (reopen delivers it), signer nil while no key is
	// loaded. key and gen are the target the signer was loaded for.
	sess    hsm.Session
	reopen  chan hsm.Session
	signer  crypto.Signer
	key     Key
	gen     uint64
	loadErr error // why the signer for gen could not be loaded, and when
	loadAt  time.Time
	alertAt time.Time    // when hsm_unavailable was last raised
	alerted bool         // raised and not cleared
	hsmUp   atomic.Bool  // it has a session, for Status
	hung    atomic.Int32 // HSM calls abandoned past their deadline, not yet returned

	// Its queue: unbounded, so handing it a stamp never blocks (the
	// stamps queued are sales waiting on their tickets).
	qmu     sync.Mutex
	queue   []job
	qclosed bool
	wake    chan struct{}

	mu         sync.Mutex
	slots      []*slot
	total      int64
	signErrors int64
	window     [10]int64 // indicia per second, ring by unix second
	winAt      [10]int64
}

// enqueue hands j to the worker; false if its queue is closed.
func (w *worker) enqueue(j job) bool {
	w.qmu.Lock()
	defer w.qmu.Unlock()
	if w.qclosed {
		return false
	}
	w.queue = append(w.queue, j)
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return true
}

// closeQueue has the worker stop once its queue is done.
func (w *worker) closeQueue() {
	w.qmu.Lock()
	defer w.qmu.Unlock()
	w.qclosed = true
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// next waits for the next job, taking up a reopened session meanwhile;
// false when the queue is closed and done.
func (w *worker) next() (job, bool) {
	for {
		w.qmu.Lock()
		if len(w.queue) > 0 {
			j := w.queue[0]
			w.queue[0] = job{}
			w.queue = w.queue[1:]
			w.qmu.Unlock()
			return j, true
		}
		closed := w.qclosed
		w.qmu.Unlock()
		if closed {
			return job{}, false
		}
		select {
		case <-w.wake:
		case s := <-w.reopen:
			w.adopt(s)
		}
	}
}

func (w *worker) run() {
	defer func() {
		if w.sess != nil {
			w.sess.Close()
		}
	}()
	for {
		j, ok := w.next()
		if !ok {
			return
		}
		if j.rekey != 0 {
			// On the worker's own goroutine: its HSM session is not shared.
			// A key it cannot load leaves the worker signing nothing, not
			// going on with the retired one: verifiers refuse a retired
			// key's stamps dated after its retirement.
			err := w.ready()
			if errors.Is(err, errNoKeySet) || w.gen != j.rekey { // a later SetKey answers for itself
				err = nil
			}
			j.done <- rekeyAck{worker: w.id, err: err}
			continue
		}
		for _, i := range j.items {
			part := w.issue(j.ticket, j.sale, i, j.seq)
			if part.Err != nil && errors.Is(part.Err, errSign) {
				// A signing error here may be this server's module: try
				// another before the sale fails.
				w.log.Warn("signing failed; the stamp goes to another PSDM server", "err", part.Err)
				if w.pool.forward(w, job{ticket: j.ticket, sale: j.sale, items: []int{i}, tries: j.tries, tried: j.tried, seq: j.seq}) {
					continue
				}
			}
			w.pool.book.Submit(part)
		}
	}
}

// issue signs one stamp on the next of the worker's MPSDs, or returns a
// part that says why it could not.
func (w *worker) issue(t *ledger.Ticket, s *ledger.Sale, i int, seq uint64) *ledger.Part {
	b := w.pool.book
	cfg := b.Config()
	it := s.Items[i]
	part := &ledger.Part{Ticket: t, Index: i}
	// First: a worker that cannot sign fails the stamp before it touches
	// an MPSD or the GPSD.
	if err := w.ready(); err != nil {
		part.Err = w.signFailed(err)
		return part
	}
	sl, err := w.slot(seq, i)
	if err != nil {
		part.Err = err
		return part
	}
	w.mu.Lock()
	base, gen := sl.head, sl.gen
	w.mu.Unlock()
	if err := b.MaySell(base.ReportedAt); err != nil {
		part.Err = err
		return part
	}
	funding := b.FundingFor(base.DR, it.Postage)
	if funding > 0 {
		if err := b.Reserve(context.Background(), funding); err != nil {
			part.Err = err
			return part
		}
	}
	dated := s.Priced
	if dated.IsZero() {
		dated = cfg.Now()
	}
	in := &protocol.Indicium{CertSerial: w.key.CertSerial, Vendor: cfg.Vendor, Model: cfg.Model, MPSDSerial: base.Serial,
		AR: base.AR + it.Postage, Postage: it.Postage, Date: protocol.DateOf(dated), OriginZIP: s.OriginZIP,
		UserID: s.UserID, SoftwareID: cfg.SoftwareID, Label: it.Label, DR: base.DR + funding - it.Postage, RateCategory: it.RateClass}
	signer := w.signer
	err = w.call(func(hsm.Session) error { return in.Sign(signer) })
	if want := w.pool.want.Load(); err == nil && want.gen != w.gen && (want.key.Label != w.key.Label || want.key.CertSerial != w.key.CertSerial) {
		// SetKey or StopSigning ran while the HSM signed: the key may be
		// the one a compromise just stopped.
		err = errKeyChanged
	}
	if err != nil {
		// On a timeout the call may still write to in: it is not read.
		b.Unreserve(funding)
		part.Err = w.signFailed(err)
		return part
	}
	w.signed()
	data, err := in.MarshalBinary()
	if err != nil {
		b.Unreserve(funding)
		part.Err = protocol.Errorf(protocol.CodeInternal, "registers of mpsd %d out of range: %v", base.Serial, err)
		return part
	}
	*part = ledger.Part{Ticket: t, Index: i, Serial: base.Serial, Gen: gen, Base: base, Funding: funding,
		AR: in.AR, DR: in.DR, CertSerial: w.key.CertSerial, MeterNumber: in.MeterNumber(), Indicium: data}
	part.Done = w.doneFunc(sl, part)
	w.mu.Lock()
	sl.head = ledger.Slot{Serial: base.Serial, AR: in.AR, DR: in.DR, ReportedAt: base.ReportedAt}
	sl.inflight++
	if seq > sl.lastSeq || seq == sl.lastSeq && i > sl.lastIdx {
		sl.lastSeq, sl.lastIdx = seq, i
	}
	w.mu.Unlock()
	w.count(1)
	return part
}

// slot picks the next live MPSD, leasing one if none is left.
//
// A stamp goes on an MPSD only after the stamps of earlier tickets: the
// committer writes each MPSD's chain in ticket order, a ticket's items in
// theirs. A stamp handed over
// from a server that could not sign it comes late; if every MPSD here
// holds later stamps not yet committed, it is refused rather
// than break their chains (it, and the stamps after it, would fail).
func (w *worker) slot(seq uint64, idx int) (*slot, error) {
	w.mu.Lock()
	live := w.slots[:0]
	for _, s := range w.slots {
		if s.dead == "" || s.inflight > 0 {
			live = append(live, s)
		}
	}
	w.slots = live
	var usable []*slot
	late := false
	for _, s := range w.slots {
		switch {
		case s.dead != "":
		case s.inflight > 0 && (s.lastSeq > seq || s.lastSeq == seq && s.lastIdx > idx):
			late = true
		default:
			usable = append(usable, s)
		}
	}
	w.mu.Unlock()
	if len(usable) == 0 && late {
		return nil, unavailable()
	}
	if len(usable) == 0 {
		ss, err := w.pool.book.Lease(context.Background(), 1)
		if err != nil || len(ss) == 0 {
			// The cause is the hub's to log, not the kiosk's to read.
			if err != nil {
				w.log.Error("no MPSD leased", "err", err)
			}
			return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "no postal security device is available")
		}
		s := &slot{committed: ss[0], head: ss[0]}
		w.mu.Lock()
		w.slots = append(w.slots, s)
		w.mu.Unlock()
		return s, nil
	}
	w.turn++
	s := usable[w.turn%len(usable)]
	if err := w.resync(s); err != nil {
		return nil, unavailable()
	}
	return s, nil
}

// registersWait bounds resync's read: a database that does not answer
// must not hold the worker, whose stamps fail meanwhile instead.
const registersWait = 15 * time.Second

// resync reads a stale slot's registers again once none of its stamps is
// in flight (this goroutine alone issues on it, so none starts meanwhile).
// With stamps in flight it issues from the committed copy, as before: a
// stamp that breaks the chain again marks it stale again.
func (w *worker) resync(s *slot) error {
	w.mu.Lock()
	need := s.stale && s.inflight == 0
	w.mu.Unlock()
	if !need {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), registersWait)
	defer cancel()
	reg, err := w.pool.book.Registers(ctx, s.committed.Serial)
	if err != nil {
		w.log.Warn("mpsd registers not read again", "mpsd", s.committed.Serial, "err", err)
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if s.committed.AR != reg.AR || s.committed.DR != reg.DR {
		w.log.Warn("mpsd registers were behind the database; a commit's answer was lost", "mpsd", reg.Serial,
			"ar", reg.AR.String(), "dr", reg.DR.String())
	}
	s.committed, s.head, s.stale = reg, reg, false
	return nil
}

// doneFunc is a part's callback from the committer.
func (w *worker) doneFunc(s *slot, p *ledger.Part) func(bool) {
	return func(committed bool) {
		w.mu.Lock()
		defer w.mu.Unlock()
		s.inflight--
		switch {
		case committed:
			s.committed.AR, s.committed.DR = p.AR, p.DR
			s.stale = false // the commit checked its base against the row
		case p.Gen == s.gen:
			// The chain broke here: issue again from what is committed.
			s.gen++
			s.head = s.committed
			s.head.ReportedAt = p.Base.ReportedAt
			s.stale = true
		}
	}
}

func (w *worker) apply(states map[uint32]ledger.LeaseState) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.slots {
		st, ok := states[s.committed.Serial]
		if !ok {
			continue
		}
		s.committed.ReportedAt, s.head.ReportedAt = st.ReportedAt, st.ReportedAt
		switch {
		case st.Locked != "":
			s.dead = "locked: " + st.Locked
		case !st.Held:
			s.dead = "lease lost"
		}
		if s.dead != "" {
			w.log.Warn("mpsd out of service", "mpsd", s.committed.Serial, "why", s.dead)
		}
	}
}

func (w *worker) count(n int64) {
	now := time.Now().Unix()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.total += n
	i := now % int64(len(w.window))
	if w.winAt[i] != now {
		w.winAt[i], w.window[i] = now, 0
	}
	w.window[i] += n
}

func (w *worker) status() Status {
	now := time.Now().Unix()
	w.mu.Lock()
	defer w.mu.Unlock()
	var recent int64
	for i := range w.window {
		if now-w.winAt[i] < int64(len(w.window)) {
			recent += w.window[i]
		}
	}
	st := Status{Worker: w.id, UptimeS: int64(time.Since(w.started).Seconds()),
		Throughput: float64(recent) / float64(len(w.window)), Total: w.total, SignErrors: w.signErrors, HSMSession: w.hsmUp.Load(), MPSDs: []uint32{}}
	busy := 0
	for _, s := range w.slots {
		if s.dead == "" {
			st.Load++
			st.MPSDs = append(st.MPSDs, s.committed.Serial)
			if s.inflight > 0 {
				busy++
			}
		}
		st.InFlight += s.inflight
	}
	if st.Load > 0 {
		st.LoadPct = 100 * busy / st.Load
	}
	return st
}

// inFlight counts stamps signed and not yet committed.
func (w *worker) inFlight() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, s := range w.slots {
		n += s.inflight
	}
	return n
}

// call runs f on the worker's session within SignTimeout. A PKCS#11 call
// cannot be cancelled: past the deadline the worker leaves the session to
// the call, to be closed when it returns, and opens another; a session the
// HSM lost is dropped the same way.
func (w *worker) call(f func(hsm.Session) error) error {
	sess := w.sess
	done := make(chan error, 1)
	go func() { done <- f(sess) }()
	timer := time.NewTimer(w.pool.cfg.SignTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		if errors.Is(err, hsm.ErrSessionLost) {
			w.log.Warn("HSM session lost; opening another", "err", err)
			w.abandon(nil)
		}
		return err
	case <-timer.C:
		w.log.Error("HSM call past its deadline; its session is abandoned and another opened", "timeout", w.pool.cfg.SignTimeout)
		w.abandon(done)
		return fmt.Errorf("%w (%v)", ErrSignTimeout, w.pool.cfg.SignTimeout)
	}
}

// abandon drops the worker's session, closing it once its pending call
// (if any) returns, and starts opening another.
func (w *worker) abandon(pending chan error) {
	sess := w.sess
	w.sess, w.signer = nil, nil
	w.hsmUp.Store(false)
	if pending != nil {
		w.hung.Add(1)
	}
	go func() {
		if pending != nil {
			<-pending
			w.hung.Add(-1)
		}
		sess.Close()
	}()
	w.startReopen()
}

// maxHung bounds a worker's HSM calls left hung: while that many have not
// returned, it opens no other session. An HSM that stays hung would
// otherwise take a session and two goroutines every SignTimeout, until it
// ran out of sessions.
const maxHung = 2

// startReopen opens a session in the background, every RetryEvery until
// one opens; next or ready takes it up. Stamps meanwhile fail at once, so
// another server signs them or their sale is refused without waiting.
func (w *worker) startReopen() {
	if w.reopen != nil {
		return
	}
	ch := make(chan hsm.Session)
	w.reopen = ch
	go func() {
		for {
			for w.hung.Load() >= maxHung {
				select {
				case <-time.After(w.pool.cfg.RetryEvery):
				case <-w.done:
					return
				}
			}
			s, err := w.pool.open()
			if err == nil {
				select {
				case ch <- s:
				case <-w.done:
					s.Close()
				}
				return
			}
			w.log.Warn("HSM session not opened; trying again", "err", err, "in", w.pool.cfg.RetryEvery)
			select {
			case <-time.After(w.pool.cfg.RetryEvery):
			case <-w.done:
				return
			}
		}
	}()
}

// adopt takes up a reopened session; the key is loaded on it next.
func (w *worker) adopt(s hsm.Session) {
	w.sess, w.reopen, w.signer, w.loadErr = s, nil, nil, nil
	w.hsmUp.Store(true)
	w.log.Info("HSM session reopened")
}

// ready makes the worker able to sign with the pool's key, or says why
// it cannot. It never leaves a signer for another key than the pool's.
func (w *worker) ready() error {
	select {
	case s := <-w.reopen: // nil channel when none is pending
		w.adopt(s)
	default:
	}
	want := w.pool.want.Load()
	if want.gen != w.gen {
		w.signer, w.key, w.gen, w.loadErr = nil, want.key, want.gen, nil
	}
	if w.key.Label == "" {
		return errNoKeySet
	}
	if w.signer != nil {
		return nil
	}
	if w.sess == nil {
		w.startReopen()
		return errNoSession
	}
	if w.loadErr != nil && (errors.Is(w.loadErr, ErrKeyMismatch) || time.Since(w.loadAt) < w.pool.cfg.RetryEvery) {
		return w.loadErr // not asked of the HSM for every stamp
	}
	signer, err := w.loadSigner(w.key)
	w.signer, w.loadErr, w.loadAt = signer, err, time.Now()
	if errors.Is(err, ErrKeyMismatch) {
		w.alertMismatch(err)
	}
	return err
}

// loadSigner finds key on the worker's session and checks it is the
// certified one.
func (w *worker) loadSigner(key Key) (crypto.Signer, error) {
	var signer crypto.Signer
	got := make(chan crypto.Signer, 1) // the call may outlive the deadline
	err := w.call(func(s hsm.Session) error {
		sg, err := s.Signer(key.Label)
		got <- sg
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("psdm: load key %d (%s): %w", key.CertSerial, key.Label, err)
	}
	signer = <-got
	if key.Public == nil {
		w.pool.warnUnchecked.Do(func() {
			w.log.Warn("the signing key is not checked against its certificate: no certified public key given", "cert_serial", key.CertSerial)
		})
		return signer, nil
	}
	// Once per load, not per stamp (see Key.Public).
	if pub, ok := signer.Public().(*ecdsa.PublicKey); !ok || !pub.Equal(key.Public) {
		return nil, fmt.Errorf("%w: the HSM's key %s is not the key of certificate %d", ErrKeyMismatch, key.Label, key.CertSerial)
	}
	return signer, nil
}

// signFailed counts a stamp not signed, tells ops (at most once per
// AlertEvery), and returns the stamp's error: typed service_unavailable,
// so the sale is refused, its card hold released, and it may be retried.
func (w *worker) signFailed(err error) error {
	w.mu.Lock()
	w.signErrors++
	w.mu.Unlock()
	switch {
	case errors.Is(err, errNoKeySet), errors.Is(err, errKeyChanged), errors.Is(err, ErrKeyMismatch):
		// Ops stopped signing, or were told of the key already.
	case w.pool.cfg.Alerts != nil && time.Since(w.alertAt) >= w.pool.cfg.AlertEvery:
		w.alertAt, w.alerted = time.Now(), true
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		w.pool.cfg.Alerts.Raise(ctx, alerts.HSMUnavailable, w.subject(),
			fmt.Sprintf("PSDM server %d cannot sign: %v; its stamps go to other servers or are refused (service_unavailable)", w.id, err))
		cancel()
	}
	return fmt.Errorf("psdm: worker %d: %w: %w: %w", w.id, errSign, err, unavailable())
}

// signed clears the worker's hsm_unavailable alert once it signs again.
func (w *worker) signed() {
	if !w.alerted {
		return
	}
	w.alerted, w.alertAt = false, time.Time{}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w.pool.cfg.Alerts.Clear(ctx, alerts.HSMUnavailable, w.subject(), "signing again")
}

func (w *worker) alertMismatch(err error) {
	w.log.Error("signing key refused", "err", err)
	if w.pool.cfg.Alerts == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w.pool.cfg.Alerts.Raise(ctx, alerts.KeyMismatch, w.subject(),
		fmt.Sprintf("PSDM server %d refuses to sign: %v. Its stamps would verify against no published key; check the HSM slot and token", w.id, err))
}

func (w *worker) subject() string { return fmt.Sprintf("psdm/%d", w.id) }
