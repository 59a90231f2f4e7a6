// Package gpiosim emulates the kiosk's front panel GPIO (service button,
// status LED, label-door switch) on a unix socket, speaking the line
// protocol documented in appliance/gpio. It sends raw levels, bounces
// included, so the kiosk's debouncing is what gets tested.
package gpiosim

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// writeTimeout bounds a write to a kiosk: writes happen under s.mu, so
// one kiosk that stops reading must not stall the others or Close.
const writeTimeout = time.Second

// Hold is how long Press keeps the button down, and then up: long enough
// to pass the kiosk's 30 ms debounce, as a finger does.
const Hold = 60 * time.Millisecond

// Sim is a running emulator.
type Sim struct {
	ln   net.Listener
	path string
	log  *slog.Logger
	wg   sync.WaitGroup

	mu      sync.Mutex
	closing bool // no more clients: Close has hung up on them
	clients map[net.Conn]bool
	pressed bool
	open    bool
	led     string
}

// Start listens on socketPath (replacing a stale socket).
func Start(socketPath string, log *slog.Logger) (*Sim, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	os.MkdirAll(filepath.Dir(socketPath), 0o755)
	os.Remove(socketPath)
	ln, err := net.Listen("unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("gpiosim: listen: %w", err)
	}
	s := &Sim{ln: ln, path: socketPath, log: log, clients: map[net.Conn]bool{}, led: "off"}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Path is the socket the kiosk should connect to.
func (s *Sim) Path() string { return s.path }

// Press presses and releases the button cleanly; it takes 2*Hold.
func (s *Sim) Press() {
	s.setButton(true)
	time.Sleep(Hold) // pace: a finger holds the button down
	s.setButton(false)
	time.Sleep(Hold) // pace: and lets it go before the next press
}

// Bounce presses the button with contact bounce on the way down and up,
// each bounce far shorter than the debounce time; it should count as one
// press.
func (s *Sim) Bounce() {
	for range 3 {
		s.setButton(true)
		time.Sleep(2 * time.Millisecond) // pace: a bounce of the contacts
		s.setButton(false)
		time.Sleep(2 * time.Millisecond) // pace: a bounce of the contacts
	}
	s.setButton(true)
	time.Sleep(Hold) // pace: held down between the bounces
	for range 2 {
		s.setButton(false)
		time.Sleep(2 * time.Millisecond) // pace: a bounce of the contacts
		s.setButton(true)
		time.Sleep(2 * time.Millisecond) // pace: a bounce of the contacts
	}
	s.setButton(false)
	time.Sleep(Hold) // pace: released before the next press
}

// SetDoor opens or closes the label door.
func (s *Sim) SetDoor(open bool) {
	s.mu.Lock()
	s.open = open
	s.broadcast(doorLine(open))
	s.mu.Unlock()
}

// LED is the last mode the kiosk set: off, on or blink.
func (s *Sim) LED() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.led
}

// Close stops the emulator, hangs up on the kiosk and removes the socket.
func (s *Sim) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	s.closing = true
	for c := range s.clients {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	os.Remove(s.path)
	return err
}

func (s *Sim) setButton(down bool) {
	s.mu.Lock()
	s.pressed = down
	s.broadcast(buttonLine(down))
	s.mu.Unlock()
}

func buttonLine(down bool) string {
	if down {
		return "button down\n"
	}
	return "button up\n"
}

func doorLine(open bool) string {
	if open {
		return "door open\n"
	}
	return "door closed\n"
}

// broadcast sends line to every kiosk, hanging up on any it cannot
// reach in time; call with s.mu held.
func (s *Sim) broadcast(line string) {
	deadline := time.Now().Add(writeTimeout)
	for c := range s.clients {
		if err := send(c, line, deadline); err != nil {
			s.log.Warn("gpiosim: write; hanging up", "err", err)
			delete(s.clients, c)
			c.Close() // serve sees it and ends
		}
	}
}

func send(c net.Conn, line string, deadline time.Time) error {
	if err := c.SetWriteDeadline(deadline); err != nil {
		return err
	}
	_, err := c.Write([]byte(line))
	return err
}

func (s *Sim) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closing {
			// Accepted as Close ran: it has already hung up on the
			// clients it knew, so serve would never end.
			s.mu.Unlock()
			c.Close()
			return
		}
		// State first, door last: the door line is the greeting.
		if err := send(c, buttonLine(s.pressed)+doorLine(s.open), time.Now().Add(writeTimeout)); err != nil {
			s.mu.Unlock()
			s.log.Warn("gpiosim: greeting", "err", err)
			c.Close()
			continue
		}
		s.clients[c] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(c)
	}
}

func (s *Sim) serve(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.clients, c)
		s.mu.Unlock()
		c.Close()
	}()
	r := bufio.NewScanner(c)
	for r.Scan() {
		mode, ok := strings.CutPrefix(strings.TrimSpace(r.Text()), "led ")
		if !ok || mode != "on" && mode != "off" && mode != "blink" {
			s.log.Warn("gpiosim: unknown line", "line", r.Text())
			continue
		}
		s.mu.Lock()
		s.led = mode
		s.mu.Unlock()
	}
}
