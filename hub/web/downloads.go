package web

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Release downloads are bounded per kiosk, so that a stolen kiosk cannot
// spend the hub's bandwidth and store reads in a loop. A kiosk has one
// download under way at a time: a new one ends the one before, rather than
// being refused, since a kiosk resumes (Range) a download whose connection
// dropped while the hub may still be writing into the dead one. And each
// kiosk has a budget of downloadBudget whole releases, refilled at as many
// an hour: a request costs the share of the release it was sent, and at
// least 1/downloadMinShare of it, since each reads the whole binary from
// the store. A kiosk fetches a release once, resuming what it has, so it
// spends about one release per release offered.
const (
	downloadBudget = 6
	// downloadUnit: budgets count thousandths of the release asked for.
	downloadUnit     = 1000
	downloadMinShare = 50
	downloadMin      = downloadUnit / downloadMinShare
	// downloadSources bounds the budgets held; with kiosk certificates
	// the fleet bounds them well before.
	downloadSources = 100_000
)

// downloadRate refills a budget: downloadBudget releases an hour.
var downloadRate = rate.Limit(float64(downloadBudget*downloadUnit) / time.Hour.Seconds())

// errSuperseded ends a download its kiosk started again.
var errSuperseded = errors.New("web: a newer download from the same kiosk took over")

// downloads are the kiosks' release download budgets and the download each
// has under way. The counts are this process's own (a cluster's hubs each
// give a kiosk a budget): each hub guards its own bandwidth and store.
type downloads struct {
	mu      sync.Mutex
	by      map[string]*kioskDownloads
	sweepAt int // len(by) at which the next sweep runs
}

type kioskDownloads struct {
	budget  *rate.Limiter // thousandths of a release
	cur     *download     // under way, or nil
	waiting int           // requests waiting for cur to end
}

// download is one under way.
type download struct {
	k    *kioskDownloads
	stop chan struct{} // closed to end it
	done chan struct{} // closed once it ended
	rc   *http.ResponseController
}

func newDownloads() *downloads {
	return &downloads{by: map[string]*kioskDownloads{}, sweepAt: 1024}
}

// begin starts a download for key at now, ending the one it has under way
// and waiting for that to end. With no budget left it starts none and
// says how long to wait.
func (d *downloads) begin(ctx context.Context, key string, now time.Time, rc *http.ResponseController) (*download, time.Duration, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := d.by[key]
	if k == nil {
		if len(d.by) >= d.sweepAt {
			d.sweepLocked(now)
		}
		if len(d.by) >= downloadSources {
			return nil, time.Minute, nil
		}
		k = &kioskDownloads{budget: rate.NewLimiter(downloadRate, downloadBudget*downloadUnit)}
		d.by[key] = k
	}
	if !k.budget.AllowN(now, downloadMin) {
		need := float64(downloadMin) - k.budget.TokensAt(now)
		return nil, time.Duration(math.Ceil(need/float64(downloadRate))) * time.Second, nil
	}
	k.waiting++
	defer func() { k.waiting-- }()
	for k.cur != nil {
		old := k.cur
		old.end()
		d.mu.Unlock()
		select {
		case <-old.done:
		case <-ctx.Done():
		}
		d.mu.Lock()
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
	}
	k.cur = &download{k: k, stop: make(chan struct{}), done: make(chan struct{}), rc: rc}
	return k.cur, 0, nil
}

// end stops dl: its next read fails and a write blocked on a dead
// connection returns (though closing that TLS connection may take its
// handler up to 5 s more: crypto/tls's close_notify). d.mu is held and dl
// is under way, so its handler has not returned.
func (dl *download) end() {
	select {
	case <-dl.stop:
	default:
		close(dl.stop)
		dl.rc.SetWriteDeadline(time.Unix(1, 0))
	}
}

// finish ends dl, which was sent sent bytes of a release of size bytes,
// and charges its budget for them beyond what begin charged.
func (d *downloads) finish(dl *download, sent, size int64, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if size > 0 {
		if n := int(min(downloadUnit, (sent*downloadUnit+size-1)/size)) - downloadMin; n > 0 {
			dl.k.budget.ReserveN(now, n) // may leave a debt, of one release at most
		}
	}
	if dl.k.cur == dl {
		dl.k.cur = nil
	}
	close(dl.done)
}

// sweepLocked drops the budgets that are full again with nothing under
// way, where a new one would be the same; d.mu is held.
func (d *downloads) sweepLocked(now time.Time) {
	for key, k := range d.by {
		if k.cur == nil && k.waiting == 0 && k.budget.TokensAt(now) >= float64(k.budget.Burst()) {
			delete(d.by, key)
		}
	}
	d.sweepAt = max(1024, 2*len(d.by))
}

// reader counts what a download reads of the binary, and fails once the
// download is ended.
type reader struct {
	io.ReadSeeker
	stop <-chan struct{}
	n    int64
}

func (r *reader) Read(p []byte) (int, error) {
	select {
	case <-r.stop:
		return 0, errSuperseded
	default:
	}
	n, err := r.ReadSeeker.Read(p)
	r.n += int64(n)
	return n, err
}
