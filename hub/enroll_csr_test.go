package hub_test

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"testing"

	"github.com/frank-postage/frank/protocol"
)

// A CSR the CA refuses counts as a failed enrollment, like a wrong code:
// anyone may send one, each costs the hub its checks, and it was never
// counted, so one address could send them without end.
func TestRefusedCSRsMeetTheEnrollLimit(t *testing.T) {
	t.Parallel()
	e := newTLSEnv(t)
	code, pin := e.enrollCode("kiosk-9", "store-a")
	pinned := &http.Client{Transport: &http.Transport{TLSClientConfig: protocol.PinnedTLS(pin)}}
	post := func(csr string) (int, *protocol.Error) {
		t.Helper()
		body, _ := json.Marshal(protocol.EnrollRequest{Code: code, CSR: csr})
		resp, err := pinned.Post(e.h.URL()+protocol.EnrollPath, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, protocol.DecodeHTTPError(b)
	}
	bad := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte("not a request")}))
	for i := range 5 {
		if st, pe := post(bad); st != http.StatusBadRequest || pe == nil || pe.Code != protocol.CodeInvalidRequest {
			t.Fatalf("bad CSR %d: %d %v", i+1, st, pe)
		}
	}
	if st, pe := post(bad); st != http.StatusTooManyRequests || pe == nil || pe.Code != protocol.CodeUnauthorized {
		t.Fatalf("a sixth bad CSR from one address: %d %v, want 429", st, pe)
	}
}
