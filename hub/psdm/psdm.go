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
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/frank-postage/frank/hsm"
	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/protocol"
)

// salesLedger is the ledger as the workers use it.
type salesLedger interface {
	Lease(ctx context.Context, n int) ([]ledger.Slot, error)
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

// Key names the signing key: its HSM label and certificate serial.
type Key struct {
	Label      string
	CertSerial uint32
}

// Config sizes the pool.
type Config struct {
	Workers        int           // default 2
	MPSDsPerWorker int           // 1 to 8; default 1
	RenewEvery     time.Duration // lease renewal; default a third of the lease TTL
	// Servers, if given, are the PSDM servers to run instead of Workers
	// alike ones: each an HSM session with its own MPSDs.
	Servers []Server
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
	MPSDs      []uint32 `json:"mpsds"`
}

// errSign marks a stamp its server's module could not sign.
var errSign = errors.New("signing failed")

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
	closed  chan struct{}
	wg      sync.WaitGroup
	key     atomic.Pointer[Key] // the key new stamps are signed with
	open    func() (hsm.Session, error)
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
	p := &Pool{cfg: cfg, book: b, log: log, closed: make(chan struct{}), open: open}
	p.key.Store(&key)
	for _, sv := range cfg.Servers {
		w, err := p.startWorker(ctx, sv, open, key)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("psdm: start server %d: %w", sv.ID, err)
		}
		p.workers = append(p.workers, w)
	}
	p.wg.Go(p.renewLoop)
	return p, nil
}

func (p *Pool) startWorker(ctx context.Context, sv Server, open func() (hsm.Session, error), key Key) (*worker, error) {
	id := sv.ID
	sess, err := open()
	if err != nil {
		return nil, err
	}
	var signer crypto.Signer
	if key.Label != "" { // none: the worker signs nothing until SetKey
		if signer, err = sess.Signer(key.Label); err != nil {
			sess.Close()
			return nil, err
		}
	}
	w := &worker{id: id, pool: p, sess: sess, signer: signer, key: key, log: p.log.With("worker", id),
		jobs: make(chan job, 1024), started: time.Now(), done: make(chan struct{})}
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
	w, err := p.startWorker(ctx, sv, p.open, p.Key())
	if err != nil {
		return fmt.Errorf("psdm: add server %d: %w", sv.ID, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.closed:
		close(w.jobs)
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
	close(w.jobs) // under p.mu: no Sell or forward sends to it now
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
	w.sess.Close()
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
	i := slices.Index(p.workers, from)
	for k := 1; k < len(p.workers); k++ {
		to := p.workers[(i+k+len(p.workers))%len(p.workers)]
		if to != from && !slices.Contains(j.tried, to.id) {
			j.tries++
			j.tried = append(slices.Clone(j.tried), from.id)
			to.jobs <- j
			return true
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
	for w, items := range byWorker {
		if len(items) > 0 {
			p.workers[w].jobs <- job{ticket: t, sale: s, items: items}
		}
	}
	p.mu.Unlock()
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

// Key is the key new stamps are signed with.
func (p *Pool) Key() Key { return *p.key.Load() }

// SetKey has every worker sign with key from its next stamp on, as a key
// rotation asks of a running hub. Stamps already queued are signed with
// the key they were queued under or the new one; both are published. A
// worker that cannot load key signs nothing until a later SetKey, and Key
// is then the zero Key.
func (p *Pool) SetKey(key Key) error {
	p.mu.Lock()
	select {
	case <-p.closed:
		p.mu.Unlock()
		return ledger.ErrClosed
	default:
	}
	done := make(chan error, len(p.workers))
	for _, w := range p.workers {
		w.jobs <- job{rekey: &key, done: done}
	}
	p.mu.Unlock()
	var errs []error
	for range p.workers {
		errs = append(errs, <-done)
	}
	if err := errors.Join(errs...); err != nil {
		p.key.Store(&Key{}) // none: the next check tries again
		return fmt.Errorf("psdm: set key %d: %w", key.CertSerial, err)
	}
	p.key.Store(&key)
	if key.Label == "" {
		p.log.Warn("signing nothing until a new key is set")
		return nil
	}
	p.log.Info("signing with a new key", "cert_serial", key.CertSerial)
	return nil
}

// StopSigning has every worker sign nothing from its next stamp on, until
// a later SetKey: the key they sign with was compromised, and a stamp it
// signs is void.
func (p *Pool) StopSigning() error { return p.SetKey(Key{}) }

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
		close(w.jobs) // no Sell can send now
	}
	p.mu.Unlock()
	p.wg.Wait()
	var serials []uint32
	for _, w := range p.workers {
		for _, s := range w.slots {
			serials = append(serials, s.committed.Serial)
		}
		w.sess.Close()
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
	for _, w := range p.workers {
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
	for _, w := range p.workers {
		w.apply(states)
	}
	return nil
}

type job struct {
	ticket *ledger.Ticket
	sale   *ledger.Sale
	items  []int
	rekey  *Key       // instead: sign from now on with this key
	done   chan error // the rekey's outcome
	tries  int        // servers that failed to sign it before
	tried  []int
}

// slot is an MPSD a worker holds: its registers as committed, and as the
// last stamp issued on it left them.
type slot struct {
	committed ledger.Slot
	head      ledger.Slot
	gen       uint64 // bumped when the chain breaks and head goes back
	inflight  int
	dead      string // lost lease or locked: never used again
}

type worker struct {
	id      int
	pool    *Pool
	sess    hsm.Session
	signer  crypto.Signer
	key     Key
	log     *slog.Logger
	jobs    chan job
	started time.Time
	done    chan struct{} // closed when run has returned
	turn    int           // round-robin over the worker's MPSDs

	mu     sync.Mutex
	slots  []*slot
	total  int64
	window [10]int64 // indicia per second, ring by unix second
	winAt  [10]int64
}

func (w *worker) run() {
	for j := range w.jobs {
		if j.rekey != nil && j.rekey.Label == "" { // StopSigning
			w.signer, w.key = nil, Key{}
			j.done <- nil
			continue
		}
		if j.rekey != nil {
			// On the worker's own goroutine: its HSM session is not shared.
			// A key it cannot load leaves the worker signing nothing, not
			// going on with the retired one: verifiers refuse a retired
			// key's stamps dated after its retirement.
			signer, err := w.sess.Signer(j.rekey.Label)
			w.signer, w.key = signer, *j.rekey
			if err != nil {
				w.signer = nil
			}
			j.done <- err
			continue
		}
		for _, i := range j.items {
			part := w.issue(j.ticket, j.sale, i)
			if part.Err != nil && errors.Is(part.Err, errSign) {
				// A signing error here may be this server's module: try
				// another before the sale fails.
				w.log.Warn("signing failed; the stamp goes to another PSDM server", "err", part.Err)
				if w.pool.forward(w, job{ticket: j.ticket, sale: j.sale, items: []int{i}, tries: j.tries, tried: j.tried}) {
					continue
				}
			}
			w.pool.book.Submit(part)
		}
	}
}

// issue signs one stamp on the next of the worker's MPSDs, or returns a
// part that says why it could not.
func (w *worker) issue(t *ledger.Ticket, s *ledger.Sale, i int) *ledger.Part {
	b := w.pool.book
	cfg := b.Config()
	it := s.Items[i]
	part := &ledger.Part{Ticket: t, Index: i}
	sl, err := w.slot()
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
	in := protocol.Indicium{CertSerial: w.key.CertSerial, Vendor: cfg.Vendor, Model: cfg.Model, MPSDSerial: base.Serial,
		AR: base.AR + it.Postage, Postage: it.Postage, Date: protocol.DateOf(dated), OriginZIP: s.OriginZIP,
		UserID: s.UserID, SoftwareID: cfg.SoftwareID, Label: it.Label, DR: base.DR + funding - it.Postage, RateCategory: it.RateClass}
	if w.signer == nil {
		b.Unreserve(funding)
		part.Err = fmt.Errorf("psdm: worker %d: %w: %w", w.id, errSign,
			protocol.Errorf(protocol.CodeServiceUnavailable, "the active signing key %d is not loaded on this hub yet; try again shortly", w.key.CertSerial))
		return part
	}
	if err := in.Sign(w.signer); err != nil {
		b.Unreserve(funding)
		part.Err = fmt.Errorf("psdm: worker %d: %w: %w", w.id, errSign, err)
		return part
	}
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
	w.mu.Unlock()
	w.count(1)
	return part
}

// slot picks the next live MPSD, leasing one if none is left.
func (w *worker) slot() (*slot, error) {
	w.mu.Lock()
	live := w.slots[:0]
	for _, s := range w.slots {
		if s.dead == "" || s.inflight > 0 {
			live = append(live, s)
		}
	}
	w.slots = live
	var usable []*slot
	for _, s := range w.slots {
		if s.dead == "" {
			usable = append(usable, s)
		}
	}
	w.mu.Unlock()
	if len(usable) == 0 {
		ss, err := w.pool.book.Lease(context.Background(), 1)
		if err != nil || len(ss) == 0 {
			return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "no postal security device is available: %v", err)
		}
		s := &slot{committed: ss[0], head: ss[0]}
		w.mu.Lock()
		w.slots = append(w.slots, s)
		w.mu.Unlock()
		return s, nil
	}
	w.turn++
	return usable[w.turn%len(usable)], nil
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
		case p.Gen == s.gen:
			// The chain broke here: issue again from what is committed.
			s.gen++
			s.head = s.committed
			s.head.ReportedAt = p.Base.ReportedAt
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
		Throughput: float64(recent) / float64(len(w.window)), Total: w.total, MPSDs: []uint32{}}
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
