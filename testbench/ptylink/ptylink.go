// Package ptylink gives each device simulator its serial line: a raw
// pseudo-terminal whose device is linked at a stable path, as a udev rule
// names a real device. Raw, because a cooked pty turns CR into LF and
// echoes, hiding the very bytes the drivers are tested on.
package ptylink

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/creack/pty"
)

// Line is an open pseudo-terminal: the simulator talks on Master, the
// kiosk opens Path.
type Line struct {
	Master *os.File
	slave  *os.File
	link   string
}

// Open opens a raw pty and links its device at link (none if empty).
func Open(link string) (*Line, error) {
	master, slave, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("ptylink: open: %w", err)
	}
	l := &Line{Master: master, slave: slave}
	if l.Master, err = pollable(master); err != nil {
		l.Close()
		return nil, fmt.Errorf("ptylink: %w", err)
	}
	if err := makeRaw(slave); err != nil {
		l.Close()
		return nil, fmt.Errorf("ptylink: raw: %w", err)
	}
	if link != "" {
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			l.Close()
			return nil, fmt.Errorf("ptylink: %w", err)
		}
		os.Remove(link)
		if err := os.Symlink(slave.Name(), link); err != nil {
			l.Close()
			return nil, fmt.Errorf("ptylink: link %s: %w", link, err)
		}
		l.link = link
	}
	return l, nil
}

// Path is the device the kiosk should open.
func (l *Line) Path() string {
	if l.link != "" {
		return l.link
	}
	return l.slave.Name()
}

// Close closes both ends, which ends the simulator's reads and writes
// even while the kiosk holds the device open, and removes the link.
func (l *Line) Close() error {
	l.Master.Close()
	l.slave.Close()
	if l.link != "" {
		os.Remove(l.link)
	}
	return nil
}
