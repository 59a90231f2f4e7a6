package e2e

import (
	"fmt"
	"math"
	"runtime"
	"strings"
)

// heapParts is the heap in use in this process, split by where it was
// allocated, so that a soak that runs the hub beside its kiosks can still
// watch the hub's share.
type heapParts map[string]uint64

// The parts, by the first kind of frame found on an allocation's stack.
const (
	partHub    = "hub"          // the hub's code, its broker and its database drivers
	partKiosks = "kiosks"       // the kiosks' code
	partMQTT   = "mqtt clients" // paho's own goroutines: 1,000 kiosks' clients and the hub's one
	partOther  = "other"        // the runtime, the standard library on its own, the testbench
)

var partPrefixes = []struct{ prefix, part string }{
	{"github.com/frank-postage/frank/hub/", partHub},
	{"github.com/mochi-mqtt/", partHub},
	{"modernc.org/sqlite", partHub},
	{"github.com/jackc/pgx/", partHub},
	{"github.com/frank-postage/frank/appliance/", partKiosks},
	{"github.com/eclipse/paho.mqtt.golang", partMQTT},
}

// measureHeap collects the garbage, then reads the heap profile. Each
// sampled record is scaled to an estimate of the whole, as pprof does.
func measureHeap() heapParts {
	runtime.GC()
	runtime.GC() // the profile describes the last completed cycle
	n, _ := runtime.MemProfile(nil, true)
	var recs []runtime.MemProfileRecord
	for {
		recs = make([]runtime.MemProfileRecord, n+64)
		var ok bool
		if n, ok = runtime.MemProfile(recs, true); ok {
			recs = recs[:n]
			break
		}
	}
	rate := float64(runtime.MemProfileRate)
	out := heapParts{}
	for _, r := range recs {
		inuse := r.InUseBytes()
		if inuse <= 0 {
			continue
		}
		scale := 1.0
		if r.AllocObjects > 0 && rate > 1 {
			avg := float64(r.AllocBytes) / float64(r.AllocObjects)
			scale = 1 / (1 - math.Exp(-avg/rate))
		}
		out[partOf(r.Stack())] += uint64(float64(inuse) * scale)
	}
	return out
}

// partOf names the part whose frame comes first in partPrefixes' order.
func partOf(stack []uintptr) string {
	best := len(partPrefixes)
	frames := runtime.CallersFrames(stack)
	for {
		f, more := frames.Next()
		for i, p := range partPrefixes[:best] {
			if strings.HasPrefix(f.Function, p.prefix) {
				best = i
				break
			}
		}
		if !more || best == 0 {
			break
		}
	}
	if best == len(partPrefixes) {
		return partOther
	}
	return partPrefixes[best].part
}

func (h heapParts) String() string {
	var parts []string
	for _, p := range []string{partHub, partKiosks, partMQTT, partOther} {
		parts = append(parts, fmt.Sprintf("%s %d MiB", p, h[p]>>20))
	}
	return strings.Join(parts, ", ")
}
