//go:build linux

package ptylink

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// readErr starts a read on the master and returns where its error lands.
// readErr reads the master until a read fails, and returns that error.
// The first read takes the byte the test wrote into the device, so once
// started is closed the reader is in its loop, and its next read is the
// one that must end (whether it blocked already or is about to).
func readErr(t *testing.T, l *Line, dev *os.File) (started <-chan struct{}, failed <-chan error) {
	ch := make(chan error, 1)
	first := make(chan struct{})
	go func() {
		buf := make([]byte, 16)
		for i := 0; ; i++ {
			n, err := l.Master.Read(buf)
			if err != nil {
				ch <- err
				return
			}
			if i == 0 && n > 0 {
				close(first)
			}
		}
	}()
	if _, err := dev.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	return first, ch
}

// The kiosk may still hold the device when a simulator closes; Close must
// end the simulator's read all the same.
func TestCloseEndsReadWhileSlaveOpen(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "dev", "tty"))
	if err != nil {
		t.Fatal(err)
	}
	dev, err := os.OpenFile(l.Path(), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	defer dev.Close()
	started, ch := readErr(t, l, dev)
	<-started
	l.Close()
	select {
	case err := <-ch:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("read after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not end a read blocked on the master")
	}
}

// Bytes still flow both ways, and a hangup still reads as EIO, which the
// simulators take as the end.
func TestDataAndHangup(t *testing.T) {
	l, err := Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dev, err := os.OpenFile(l.Path(), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if _, err := dev.Write([]byte("a\rb")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	if _, err := io.ReadFull(l.Master, buf); err != nil || string(buf) != "a\rb" {
		t.Fatalf("master read %q, %v; want raw \"a\\rb\"", buf, err)
	}
	if _, err := l.Master.Write([]byte("c\n")); err != nil {
		t.Fatal(err)
	}
	buf = buf[:2]
	if _, err := io.ReadFull(dev, buf); err != nil || string(buf) != "c\n" {
		t.Fatalf("device read %q, %v", buf, err)
	}

	started, ch := readErr(t, l, dev)
	<-started
	l.slave.Close()
	dev.Close()
	select {
	case err := <-ch:
		if !errors.Is(err, syscall.EIO) {
			t.Fatalf("read after hangup: %v, want EIO", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("hangup did not end a read blocked on the master")
	}
}
