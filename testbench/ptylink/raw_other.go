//go:build !linux

package ptylink

import (
	"errors"
	"os"
)

// The simulators are Linux-only: termios requests differ elsewhere.
func makeRaw(*os.File) error { return errors.ErrUnsupported }

func pollable(f *os.File) (*os.File, error) { return f, nil }
