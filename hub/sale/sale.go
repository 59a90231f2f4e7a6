// Package sale is the hub's purchase service: it turns a kiosk's purchase
// request into a result, checking every rule before any money moves, and
// answers a repeated request_id with the bytes it sent the first time.
package sale

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/protocol"
)

// seller issues indicia; the PSDM pool.
type seller interface {
	Sell(ctx context.Context, s *ledger.Sale) ([]byte, error)
}

// book stores final answers; the ledger.
type book interface {
	Replay(ctx context.Context, kioskID, requestID string, bodyHash []byte) ([]byte, error)
	Reject(ctx context.Context, kioskID, requestID string, bodyHash []byte, perr *protocol.Error) ([]byte, error)
}

// kiosks numbers kiosks for the indicium's user field.
type kiosks interface {
	UserID(ctx context.Context, kioskID string) (uint64, error)
}

// rateBook gives the table in force.
type rateBook interface {
	Current(now time.Time) (protocol.RateTable, error)
}

// Service answers purchase requests.
type Service struct {
	Seller seller
	Book   book
	Kiosks kiosks
	Rates  rateBook
	Log    *slog.Logger
	Now    func() time.Time
}

// Purchase answers one purchase request that arrived on kioskID's topic.
// It always returns bytes to publish; err is only for logging and metrics.
func (s *Service) Purchase(ctx context.Context, kioskID string, payload []byte) ([]byte, *protocol.Error) {
	req, err := protocol.DecodePurchaseRequest(payload)
	if err != nil {
		id := ""
		if req != nil {
			id = req.RequestID
		}
		return s.refuse(id, err)
	}
	if req.KioskID != kioskID {
		return s.refuse(req.RequestID, protocol.Errorf(protocol.CodeKioskMismatch,
			"kiosk_id %s in a message on kiosk %s's topic", req.KioskID, kioskID))
	}
	canon, err := json.Marshal(req)
	if err != nil {
		return s.refuse(req.RequestID, fmt.Errorf("sale: canonical form: %w", err))
	}
	h := sha256.Sum256(canon)
	hash := h[:]
	if prior, err := s.Book.Replay(ctx, kioskID, req.RequestID, hash); prior != nil || err != nil {
		if err != nil {
			return s.refuse(req.RequestID, err)
		}
		return prior, nil
	}
	sale, err := s.prepare(ctx, req, hash)
	if err == nil {
		var out []byte
		if out, err = s.Seller.Sell(ctx, sale); err == nil {
			return out, nil
		}
	}
	perr := protocol.AsError(err)
	if perr.Code == protocol.CodeInternal || errors.Is(err, ledger.ErrTamper) {
		s.Log.Error("purchase failed", "kiosk", kioskID, "request_id", req.RequestID, "err", err)
	}
	out, rerr := s.Book.Reject(ctx, kioskID, req.RequestID, hash, perr)
	if rerr != nil {
		s.Log.Error("could not record rejection", "request_id", req.RequestID, "err", rerr)
		return s.refuse(req.RequestID, perr)
	}
	return out, perr
}

// prepare checks the request against the current rates and the kiosk.
func (s *Service) prepare(ctx context.Context, req *protocol.PurchaseRequest, hash []byte) (*ledger.Sale, error) {
	rt, err := s.Rates.Current(s.Now())
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeServiceUnavailable, "no rate table is in force")
	}
	if req.RateTable != "" && req.RateTable != rt.Version {
		return nil, protocol.Errorf(protocol.CodeRateTableStale,
			"priced on rate table %s; %s is in force", req.RateTable, rt.Version)
	}
	zip, _ := req.OriginZIP.Number() // validated by the decoder
	sale := &ledger.Sale{KioskID: req.KioskID, RequestID: req.RequestID, BodyHash: hash, OriginZIP: zip}
	for i, it := range req.Items {
		price, err := rt.Price(it.RateClass, it.WeightMg)
		if err != nil {
			return nil, err
		}
		if price != it.AmountMills {
			return nil, protocol.Errorf(protocol.CodeAmountMismatch,
				"items[%d]: %s at %d mg costs %d mills, request says %d", i, it.RateClass, it.WeightMg, price, it.AmountMills)
		}
		sale.Items = append(sale.Items, ledger.Item{RateClass: it.RateClass, Postage: price, Label: it.Label()})
	}
	if sale.UserID, err = s.Kiosks.UserID(ctx, req.KioskID); err != nil {
		return nil, err
	}
	return sale, nil
}

// refuse builds a rejection that is not recorded: the request could not be
// read, or the refusal does not belong to this request_id.
func (s *Service) refuse(requestID string, err error) ([]byte, *protocol.Error) {
	perr := protocol.AsError(err)
	if perr.Code == protocol.CodeInternal {
		s.Log.Error("purchase failed", "request_id", requestID, "err", err)
	}
	out, _ := json.Marshal(protocol.Rejected(requestID, perr)) // strings only: cannot fail
	return out, perr
}
