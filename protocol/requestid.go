package protocol

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"time"
)

// NewRequestID returns a new request id: 26 characters of Crockford's
// base32 for 48 bits of the time in milliseconds and 80 random bits (a
// ULID's layout). Ids made later sort later, so the hub's index of
// sales by request id takes each new one at its end, on a page it has just
// written, instead of on a random page of the whole index: a random page
// is a page written to the log, and read from disk once the index outgrows
// memory, for every sale.
func NewRequestID() string { return requestIDAt(time.Now()) }

func requestIDAt(t time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t.UnixMilli())<<16) // 48 bits of milliseconds
	rand.Read(b[6:])
	return idEncoding.EncodeToString(b[:])
}

// idEncoding's alphabet is in ASCII order, so ids sort as their bytes do.
var idEncoding = base32.NewEncoding("0123456789ABCDEFGHJKMNPQRSTVWXYZ").WithPadding(base32.NoPadding)
