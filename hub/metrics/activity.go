package metrics

import (
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"time"
)

// ringMinutes is how far back Activity remembers: one day, one bucket a
// minute.
const ringMinutes = 24 * 60

// latencyBounds are the upper bounds of the per-minute latency histogram.
// Steps of at most 2x, interpolated, give a p95 coarse but good enough for
// a chart, in 92 bytes a minute.
var latencyBounds = [...]time.Duration{
	1 * time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond, 5 * time.Millisecond,
	10 * time.Millisecond, 15 * time.Millisecond, 20 * time.Millisecond, 30 * time.Millisecond,
	50 * time.Millisecond, 75 * time.Millisecond, 100 * time.Millisecond, 150 * time.Millisecond,
	200 * time.Millisecond, 300 * time.Millisecond, 500 * time.Millisecond, 750 * time.Millisecond,
	1 * time.Second, 1500 * time.Millisecond, 2 * time.Second, 3 * time.Second,
	5 * time.Second, 10 * time.Second,
}

// minute is one minute of answers. The last histogram slot counts answers
// slower than every bound.
type minute struct {
	at           int64 // Unix minute held; a slot holding another is stale
	ok, rejected uint32
	sum, max     time.Duration
	hist         [len(latencyBounds) + 1]uint32
}

func (b *minute) add(o *minute) {
	b.ok += o.ok
	b.rejected += o.rejected
	b.sum += o.sum
	b.max = max(b.max, o.max)
	for i := range b.hist {
		b.hist[i] += o.hist[i]
	}
}

// Activity is the last 24 hours of purchase answers, minute by minute, for
// the ops console charts. Prometheus has the long history; this is here so
// the console draws without one.
type Activity struct {
	now      func() time.Time
	mu       sync.Mutex
	ring     [ringMinutes]minute // slot Unix-minute mod ringMinutes
	restored map[int64]minute    // what Restore added, which Finished leaves out
	// peers are the other hubs' minutes as they last told them (each note
	// replaces what it names), and floor each one's last minute that
	// Restore read from the store, which a late note must not add again.
	peers map[string]map[int64]minute
	floor map[string]int64
}

func newActivity(now func() time.Time) *Activity {
	a := &Activity{now: now}
	for i := range a.ring {
		a.ring[i].at = math.MinInt64 // not minute 0: a fake clock may start at the epoch
	}
	return a
}

// unixMinute floors, so times before 1970 land in the right minute too.
func unixMinute(t time.Time) int64 {
	s := t.Unix()
	m := s / 60
	if s%60 < 0 {
		m--
	}
	return m
}

func slot(m int64) int {
	i := m % ringMinutes
	if i < 0 {
		i += ringMinutes
	}
	return int(i)
}

// record counts one answer taking d at now. It is on the hot path: no
// allocation, and the lock covers only a few additions.
func (a *Activity) record(now time.Time, d time.Duration, ok bool) {
	d = max(d, 0)
	h := len(latencyBounds)
	for i, b := range latencyBounds {
		if d <= b {
			h = i
			break
		}
	}
	m := unixMinute(now)
	a.mu.Lock()
	b := &a.ring[slot(m)]
	if b.at != m {
		*b = minute{at: m} // a day-old minute, or never used
	}
	if ok {
		b.ok++
	} else {
		b.rejected++
	}
	b.sum += d
	b.max = max(b.max, d)
	b.hist[h]++
	a.mu.Unlock()
}

// Point is the answers of one step of a Series.
type Point struct {
	At       time.Time `json:"at"` // start of the step
	OK       int       `json:"ok"`
	Rejected int       `json:"rejected"`
	MeanMs   float64   `json:"mean_ms"`
	P95Ms    float64   `json:"p95_ms"`
	MaxMs    float64   `json:"max_ms"`
}

// Series returns the last span of answers in steps of step, oldest first,
// empty steps as zeros: (time.Hour, time.Minute) gives 60 points. Steps are
// whole minutes aligned on multiples of step since the Unix epoch, so
// 15-minute steps start on the quarter hour; the last point is the step in
// progress. span is capped at 24 hours and step is at least a minute.
func (a *Activity) Series(span, step time.Duration) []Point {
	if span <= 0 {
		return nil
	}
	span = min(span, ringMinutes*time.Minute)
	stepMin := max(int64(step/time.Minute), 1)
	stepD := time.Duration(stepMin) * time.Minute
	n := int((span + stepD - 1) / stepD)
	now := a.now()
	cur := unixMinute(now)
	last := cur - (cur%stepMin+stepMin)%stepMin
	first := last - int64(n-1)*stepMin
	oldest := cur - ringMinutes + 1 // older minutes' slots hold newer ones

	out := make([]Point, n)
	a.mu.Lock()
	defer a.mu.Unlock()
	for p := range out {
		start := first + int64(p)*stepMin
		var sum minute
		for m := max(start, oldest); m < start+stepMin && m <= cur; m++ {
			if b := &a.ring[slot(m)]; b.at == m {
				sum.add(b)
			}
			for _, ms := range a.peers {
				if b, ok := ms[m]; ok {
					sum.add(&b)
				}
			}
		}
		out[p] = sum.point(time.Unix(start*60, 0).In(now.Location()))
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (b *minute) point(at time.Time) Point {
	p := Point{At: at, OK: int(b.ok), Rejected: int(b.rejected)}
	n := b.ok + b.rejected
	if n == 0 {
		return p
	}
	p.MeanMs = ms(b.sum) / float64(n)
	p.MaxMs = ms(b.max)
	p.P95Ms = min(b.quantile(0.95), p.MaxMs)
	return p
}

// quantile interpolates linearly inside the histogram slot holding the
// q-th answer; the open-ended last slot ends at the maximum seen.
func (b *minute) quantile(q float64) float64 {
	n := b.ok + b.rejected
	rank := math.Ceil(q*float64(n) - 1e-9) // 0.95*100 must rank 95, not 96
	var below float64
	for i, c := range b.hist {
		if c == 0 || below+float64(c) < rank {
			below += float64(c)
			continue
		}
		var lo, hi float64
		if i > 0 {
			lo = ms(latencyBounds[i-1])
		}
		if i < len(latencyBounds) {
			hi = ms(latencyBounds[i])
		} else {
			hi = ms(b.max)
		}
		return lo + (hi-lo)*(rank-below)/float64(c)
	}
	return ms(b.max)
}

// Minute is one minute of answers as it is kept in the store, so the
// charts outlive a restart and show every hub on one database, or as a hub
// tells the others while it goes on.
type Minute struct {
	Hub          string // the hub that answered, when read from the store
	At           int64  // Unix minute
	OK, Rejected uint32
	Sum, Max     time.Duration
	Hist         []uint32 // one count per latency slot, the slowest last
}

// Restore adds stored minutes into the ring, as if recorded here; minutes
// older than a day are skipped, and a histogram of another shape is
// dropped rather than misread.
func (a *Activity) Restore(ms []Minute) {
	oldest := unixMinute(a.now()) - ringMinutes + 1
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range ms {
		if m.At < oldest || len(m.Hist) != len(latencyBounds)+1 {
			continue
		}
		b := &a.ring[slot(m.At)]
		if b.at != m.At {
			*b = minute{at: m.At}
		}
		o := minute{at: m.At, ok: m.OK, rejected: m.Rejected, sum: m.Sum, max: m.Max}
		copy(o.hist[:], m.Hist)
		b.add(&o)
		if m.Hub != "" {
			if a.floor == nil {
				a.floor = map[string]int64{}
			}
			if f, ok := a.floor[m.Hub]; !ok || m.At > f {
				a.floor[m.Hub] = m.At
			}
		}
		if a.restored == nil {
			a.restored = map[int64]minute{}
		}
		r := a.restored[m.At]
		r.add(&o)
		a.restored[m.At] = r
	}
}

// Finished returns the minutes from since up to the one in progress,
// leaving that one out: what is ready to be stored.
func (a *Activity) Finished(since int64) []Minute {
	cur := unixMinute(a.now())
	return a.own(max(since, cur-ringMinutes+1), cur-1)
}

// Live returns this hub's minute in progress and the one before it (whose
// last seconds may not have been told yet): what the other hubs are told.
func (a *Activity) Live() []Minute {
	cur := unixMinute(a.now())
	return a.own(cur-1, cur)
}

// Merge takes the minutes another hub told. Each replaces what that hub
// told before of the same minute; minutes Restore already read from the
// store, and minutes older than a day, are left out.
func (a *Activity) Merge(hub string, ms []Minute) {
	oldest := unixMinute(a.now()) - ringMinutes + 1
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.peers == nil {
		a.peers = map[string]map[int64]minute{}
	}
	mine := a.peers[hub]
	if mine == nil {
		mine = map[int64]minute{}
		a.peers[hub] = mine
	}
	floor, restored := a.floor[hub]
	for _, m := range ms {
		if m.At < oldest || (restored && m.At <= floor) || len(m.Hist) != len(latencyBounds)+1 {
			continue
		}
		o := minute{at: m.At, ok: m.OK, rejected: m.Rejected, sum: m.Sum, max: m.Max}
		copy(o.hist[:], m.Hist)
		mine[m.At] = o
	}
	if len(mine) > ringMinutes { // a long-lived peer: forget its oldest day
		for at := range mine {
			if at < oldest {
				delete(mine, at)
			}
		}
	}
	for h, ms := range a.peers { // a peer gone a day is forgotten
		newest := int64(math.MinInt64)
		for at := range ms {
			newest = max(newest, at)
		}
		if newest < oldest {
			delete(a.peers, h)
		}
	}
}

// own returns what this process answered in minutes from to to.
func (a *Activity) own(from, to int64) []Minute {
	var out []Minute
	a.mu.Lock()
	defer a.mu.Unlock()
	for m := from; m <= to; m++ {
		b := a.ring[slot(m)]
		if b.at != m {
			continue
		}
		if r, ok := a.restored[m]; ok {
			// Only what this process answered; the maximum stays an upper bound.
			b.ok, b.rejected, b.sum = b.ok-r.ok, b.rejected-r.rejected, b.sum-r.sum
			for i := range b.hist {
				b.hist[i] -= r.hist[i]
			}
		}
		if b.ok+b.rejected == 0 {
			continue
		}
		out = append(out, Minute{At: m, OK: b.ok, Rejected: b.rejected, Sum: b.sum, Max: b.max, Hist: append([]uint32(nil), b.hist[:]...)})
	}
	return out
}

// Now is the Unix minute in progress.
func (a *Activity) Now() int64 { return unixMinute(a.now()) }

// activityNote is a hub's live minutes as told to the other hubs.
type activityNote struct {
	Hub     string       `json:"hub"`
	Minutes []noteMinute `json:"minutes"`
}

type noteMinute struct {
	At       int64    `json:"at"`
	OK       uint32   `json:"ok"`
	Rejected uint32   `json:"rejected"`
	SumUs    int64    `json:"sum_us"`
	MaxUs    int64    `json:"max_us"`
	Hist     []uint32 `json:"hist"`
}

// EncodeActivityNote is hub's live minutes as a notification's payload.
func EncodeActivityNote(hub string, ms []Minute) (string, error) {
	n := activityNote{Hub: hub, Minutes: make([]noteMinute, len(ms))}
	for i, m := range ms {
		n.Minutes[i] = noteMinute{At: m.At, OK: m.OK, Rejected: m.Rejected, SumUs: m.Sum.Microseconds(), MaxUs: m.Max.Microseconds(), Hist: m.Hist}
	}
	b, err := json.Marshal(n)
	if err != nil {
		return "", fmt.Errorf("metrics: activity note: %w", err)
	}
	return string(b), nil
}

// DecodeActivityNote reads a notification EncodeActivityNote made.
func DecodeActivityNote(payload string) (hub string, ms []Minute, err error) {
	var n activityNote
	if err := json.Unmarshal([]byte(payload), &n); err != nil {
		return "", nil, fmt.Errorf("metrics: activity note: %w", err)
	}
	if n.Hub == "" || len(n.Minutes) > 2 {
		return "", nil, fmt.Errorf("metrics: activity note: want a hub and at most 2 minutes")
	}
	for _, m := range n.Minutes {
		var count uint64
		for _, c := range m.Hist {
			count += uint64(c)
		}
		if len(m.Hist) != len(latencyBounds)+1 || count != uint64(m.OK)+uint64(m.Rejected) || m.SumUs < 0 || m.MaxUs < 0 {
			return "", nil, fmt.Errorf("metrics: activity note: minute %d does not add up", m.At)
		}
		ms = append(ms, Minute{Hub: n.Hub, At: m.At, OK: m.OK, Rejected: m.Rejected,
			Sum: time.Duration(m.SumUs) * time.Microsecond, Max: time.Duration(m.MaxUs) * time.Microsecond, Hist: m.Hist})
	}
	return n.Hub, ms, nil
}
