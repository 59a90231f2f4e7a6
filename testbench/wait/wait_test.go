package wait_test

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/frank-postage/frank/testbench/wait"
)

func TestPollReturnsOnceTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	go func() {
		for range 3 {
			n.Add(1)
		}
	}()
	wait.For(t, 10*time.Second, "three increments", func() bool { return n.Load() == 3 })
}

func TestPollGivesTheLastError(t *testing.T) {
	calls := 0
	err := wait.Poll(20*time.Millisecond, func() error {
		calls++
		return errors.New("printer busy")
	})
	if err == nil || !strings.Contains(err.Error(), "printer busy") {
		t.Fatalf("got %v", err)
	}
	if calls < 2 {
		t.Fatalf("cond was called %d times in 20 ms", calls)
	}
}

func TestNeverPassesWhenNothingHappens(t *testing.T) {
	wait.Never(t, 10*time.Millisecond, "it happened", func() bool { return false })
}
