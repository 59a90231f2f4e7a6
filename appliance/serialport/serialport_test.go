package serialport

import (
	"bytes"
	"errors"
	"io"
	"syscall"
	"testing"
)

// shortWriter takes at most three bytes a call and fails every other call
// with EINTR, as a tty write interrupted by a signal does.
type shortWriter struct {
	bytes.Buffer
	calls int
}

func (w *shortWriter) Write(b []byte) (int, error) {
	w.calls++
	if w.calls%2 == 0 {
		return 0, syscall.EINTR
	}
	return w.Buffer.Write(b[:min(3, len(b))])
}

func TestWriteAllMendsShortWrites(t *testing.T) {
	var w shortWriter
	msg := []byte("GS v 0, then a whole raster of rows")
	n, err := writeAll(&w, msg)
	if err != nil || n != len(msg) || !bytes.Equal(w.Bytes(), msg) {
		t.Fatalf("wrote %d %q, %v", n, w.Bytes(), err)
	}
}

type stuckWriter struct{ err error }

func (w stuckWriter) Write([]byte) (int, error) { return 0, w.err }

func TestWriteAllFails(t *testing.T) {
	if _, err := writeAll(stuckWriter{}, []byte("x")); !errors.Is(err, io.ErrShortWrite) {
		t.Errorf("a writer that takes nothing: %v", err)
	}
	if _, err := writeAll(stuckWriter{syscall.EIO}, []byte("x")); !errors.Is(err, syscall.EIO) {
		t.Errorf("a failing writer: %v", err)
	}
}
