package front

import (
	"bytes"
	"net"
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// countingConn counts the reads that reach the connection.
type countingConn struct {
	net.Conn
	reads int
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.reads++
	return c.Conn.Read(p)
}

// Packets that arrive together are read from the socket together: paho
// asks for a packet's header a byte at a time.
func TestBufferedConnReadsPacketsTogether(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	var wire []byte
	for id := range uint16(3) {
		ack := packets.NewControlPacket(packets.Puback).(*packets.PubackPacket)
		ack.MessageID = id + 1
		wire = append(wire, encode(t, ack)...)
	}
	go func() {
		server.Write(wire)
		server.Close()
	}()
	counted := &countingConn{Conn: client}
	c := buffered(counted)
	for id := range uint16(3) {
		p, err := packets.ReadPacket(c)
		if err != nil {
			t.Fatalf("packet %d: %v", id+1, err)
		}
		if ack, ok := p.(*packets.PubackPacket); !ok || ack.MessageID != id+1 {
			t.Fatalf("packet %d: %v", id+1, p)
		}
	}
	if counted.reads != 1 {
		t.Errorf("3 packets took %d reads of the connection, want 1", counted.reads)
	}
}

func encode(t *testing.T, p packets.ControlPacket) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := p.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
