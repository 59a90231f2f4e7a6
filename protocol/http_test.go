package protocol_test

import (
	"errors"
	"net/http"
	"testing"

	"github.com/frank-postage/frank/protocol"
)

func TestHTTPError(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
		code   protocol.Code
	}{
		{protocol.Errorf(protocol.CodePaymentDeclined, "no"), http.StatusPaymentRequired, protocol.CodePaymentDeclined},
		{protocol.Errorf(protocol.CodeKioskLocked, "locked"), http.StatusLocked, protocol.CodeKioskLocked},
		{protocol.Errorf(protocol.CodePaymentTimeout, "slow"), http.StatusServiceUnavailable, protocol.CodePaymentTimeout},
		{protocol.Errorf(protocol.CodeNotFound, "none"), http.StatusNotFound, protocol.CodeNotFound},
		{errors.New("disk on fire"), http.StatusServiceUnavailable, protocol.CodeInternal},
	} {
		status, body := protocol.HTTPError(c.err)
		if status != c.status || body.Error.Code != c.code {
			t.Errorf("%v: %d %s, want %d %s", c.err, status, body.Error.Code, c.status, c.code)
		}
	}
	if pe := protocol.DecodeHTTPError([]byte(`{"code":"unauthorized","message":"x"}`)); pe == nil || pe.Code != protocol.CodeUnauthorized {
		t.Fatalf("the old bare shape: %+v", pe)
	}
	if pe := protocol.DecodeHTTPError([]byte(`{"ready":false}`)); pe != nil {
		t.Fatalf("no error read as %+v", pe)
	}
}
