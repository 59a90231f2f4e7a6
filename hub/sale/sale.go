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
	"sync"
	"time"

	"github.com/frank-postage/frank/hub/ledger"
	"github.com/frank-postage/frank/protocol"
)

// seller issues and commits indicia; the PSDM pool.
type seller interface {
	Sell(ctx context.Context, s *ledger.Sale) ([]byte, error)
}

// book keeps final answers; the ledger.
type book interface {
	Precheck(ctx context.Context, kioskID, requestID string, bodyHash []byte, labels []protocol.LabelSerial) ([]byte, bool, error)
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

	mu       sync.Mutex
	inflight map[string]*flight            // kiosk/request -> the sale answering it
	labels   map[protocol.LabelSerial]bool // labels of sales in flight
}

// flight is a sale in progress; a repeat of its request waits for it.
type flight struct {
	hash []byte
	done chan struct{}
	out  []byte
	perr *protocol.Error
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
	// A resend that arrives while the first copy is still being served
	// waits for it and gets the same answer.
	f, first := s.join(kioskID+"/"+req.RequestID, hash)
	if !first {
		<-f.done
		if string(f.hash) != string(hash) {
			return s.refuse(req.RequestID, protocol.Errorf(protocol.CodeIdempotencyConflict,
				"request_id %s was used before with a different body", req.RequestID))
		}
		return f.out, f.perr
	}
	defer s.leave(kioskID+"/"+req.RequestID, f)
	f.out, f.perr = s.purchase(ctx, req, hash)
	return f.out, f.perr
}

func (s *Service) purchase(ctx context.Context, req *protocol.PurchaseRequest, hash []byte) ([]byte, *protocol.Error) {
	kioskID := req.KioskID
	labels := make([]protocol.LabelSerial, len(req.Items))
	for i, it := range req.Items {
		labels[i] = it.Label()
	}
	prior, used, err := s.Book.Precheck(ctx, kioskID, req.RequestID, hash, labels)
	if prior != nil || err != nil {
		if err != nil {
			return s.refuse(req.RequestID, err)
		}
		return prior, nil
	}
	sale, err := s.prepare(ctx, req, hash)
	if err == nil && used {
		err = protocol.Errorf(protocol.CodeLabelUsed, "a label of this request already carries an indicium")
	}
	if err == nil {
		release, lerr := s.holdLabels(sale)
		err = lerr
		if err == nil {
			defer release()
			var out []byte
			if out, err = s.Seller.Sell(ctx, sale); err == nil {
				return out, nil
			}
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

func (s *Service) join(key string, hash []byte) (*flight, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight == nil {
		s.inflight = map[string]*flight{}
		s.labels = map[protocol.LabelSerial]bool{}
	}
	if f, ok := s.inflight[key]; ok {
		return f, false
	}
	f := &flight{hash: hash, done: make(chan struct{})}
	s.inflight[key] = f
	return f, true
}

func (s *Service) leave(key string, f *flight) {
	s.mu.Lock()
	delete(s.inflight, key)
	s.mu.Unlock()
	close(f.done)
}

// holdLabels refuses labels that belong to another sale in flight, and
// holds the sale's labels until it ends.
func (s *Service) holdLabels(sale *ledger.Sale) (func(), error) {
	s.mu.Lock()
	for _, it := range sale.Items {
		if s.labels[it.Label] {
			s.mu.Unlock()
			return nil, protocol.Errorf(protocol.CodeLabelUsed, "label %s is being used by another sale", it.Label)
		}
	}
	for _, it := range sale.Items {
		s.labels[it.Label] = true
	}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		for _, it := range sale.Items {
			delete(s.labels, it.Label)
		}
		s.mu.Unlock()
	}, nil
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
