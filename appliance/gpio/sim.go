package gpio

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
)

// helloTimeout bounds the wait for the simulator's state on connect.
const helloTimeout = 5 * time.Second

// OpenSim opens the panel on the testbench GPIO simulator listening at
// socketPath. It returns once the simulator has sent the current state.
func OpenSim(socketPath string) (*Panel, error) {
	c, err := net.Dial("unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("gpio: open sim: %w", err)
	}
	s := &simLED{c: c}
	p := newPanel(s, slog.Default())
	hello := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := bufio.NewScanner(c)
		greeted := false
		for r.Scan() {
			switch strings.TrimSpace(r.Text()) {
			case "button down":
				p.button.set(true)
			case "button up":
				p.button.set(false)
			case "door open":
				p.door.set(true)
			case "door closed":
				p.door.set(false)
			default:
				continue
			}
			if !greeted && strings.HasPrefix(r.Text(), "door") {
				greeted = true
				close(hello)
			}
		}
		if !greeted {
			close(hello)
		}
	}()
	var fail error
	select {
	case <-hello:
		select {
		case <-done:
			fail = errors.New("simulator hung up before sending its state")
		default:
		}
	case <-time.After(helloTimeout):
		fail = errors.New("no state from simulator")
	}
	if fail != nil {
		c.Close()
		<-done
		return nil, fmt.Errorf("gpio: open sim: %w", fail)
	}
	p.close = func() error {
		err := c.Close()
		<-done
		return err
	}
	return p, nil
}

// simLED sends LED modes to the simulator.
type simLED struct {
	mu sync.Mutex
	c  net.Conn
}

func (s *simLED) setLED(m LEDMode) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := fmt.Fprintf(s.c, "led %s\n", m); err != nil {
		return fmt.Errorf("gpio: set led: %w", err)
	}
	return nil
}
