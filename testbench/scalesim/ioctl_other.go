//go:build !linux

package scalesim

import (
	"errors"
	"os"
)

// makeRaw is only written for Linux, where the kiosk and testbench run;
// elsewhere the line discipline would rewrite CR and LF.
func makeRaw(f *os.File) error { return errors.ErrUnsupported }
