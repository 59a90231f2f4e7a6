package console

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/frank-postage/frank/hub/releases"
	"github.com/frank-postage/frank/protocol"
)

// rolloutBook lists the rollouts of kiosk releases, and widens or aborts
// a running one.
type rolloutBook interface {
	List(ctx context.Context) ([]releases.Rollout, error)
	Get(ctx context.Context, id int64) (*releases.Rollout, error)
	Widen(ctx context.Context, id int64) error
	Abort(ctx context.Context, id int64, by string) error
}

// rolloutsView is the rollouts page: each rollout's progress, and how
// many kiosks run each firmware version.
type rolloutsView struct {
	Rollouts []releases.Rollout `json:"rollouts"`
	Versions []versionCount     `json:"versions"`
}

type versionCount struct {
	Firmware string `json:"firmware"`
	Kiosks   int    `json:"kiosks"`
}

func (c *Console) rollouts(ctx context.Context) (*rolloutsView, error) {
	v := &rolloutsView{Rollouts: []releases.Rollout{}, Versions: []versionCount{}}
	var err error
	if c.Rollouts != nil {
		if v.Rollouts, err = c.Rollouts.List(ctx); err != nil {
			return nil, err
		}
	}
	n := map[string]int{}
	for _, s := range c.Presence.List() {
		if s.Telemetry != nil {
			n[s.Telemetry.Firmware]++
		}
	}
	for f, k := range n {
		v.Versions = append(v.Versions, versionCount{f, k})
	}
	slices.SortFunc(v.Versions, func(a, b versionCount) int { return cmp.Compare(a.Firmware, b.Firmware) })
	return v, nil
}

func (c *Console) rolloutsPage(w http.ResponseWriter, r *http.Request) {
	v, err := c.rollouts(r.Context())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "rollouts.html", page{Title: "Rollouts", Data: v})
}

func (c *Console) apiRollouts(w http.ResponseWriter, r *http.Request) {
	v, err := c.rollouts(r.Context())
	if err != nil {
		c.apiFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// rolloutAction widens or aborts rollout {id} for the operator: the
// console's buttons and the operator API share it.
func (c *Console) rolloutAction(r *http.Request, action string) (*releases.Rollout, error) {
	if c.Rollouts == nil {
		return nil, protocol.Errorf(protocol.CodeNotFound, "this hub has no releases")
	}
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeNotFound, "no rollout %q", chi.URLParam(r, "id"))
	}
	if _, err := c.Rollouts.Get(r.Context(), id); errors.Is(err, releases.ErrUnknown) {
		return nil, protocol.Errorf(protocol.CodeNotFound, "no rollout %d", id)
	} else if err != nil {
		return nil, err
	}
	by := current(r).Subject.Login
	switch action {
	case "widen":
		err = c.Rollouts.Widen(r.Context(), id)
	case "abort":
		err = c.Rollouts.Abort(r.Context(), id, by)
	}
	c.Log.Info("rollout "+action, "rollout", id, "by", by, "err", err)
	if err != nil {
		return nil, err
	}
	return c.Rollouts.Get(r.Context(), id)
}

func (c *Console) rolloutButton(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		flash := "Rollout " + chi.URLParam(r, "id") + ": " + map[string]string{
			"widen": "offered to its next stage.", "abort": "aborted; kiosks not yet updated are no longer offered it."}[action]
		if _, err := c.rolloutAction(r, action); err != nil {
			if protocol.AsError(err).Code == protocol.CodeInternal {
				c.fail(w, r, err)
				return
			}
			flash = "Not done: " + protocol.AsError(err).Message
		}
		c.Sessions.Flash(w, r, flash)
		http.Redirect(w, r, "/console/rollouts", http.StatusSeeOther)
	}
}

func (c *Console) apiRolloutAction(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ro, err := c.rolloutAction(r, action)
		if err != nil {
			if protocol.AsError(err).Code == protocol.CodeInternal {
				c.apiFail(w, r, err)
				return
			}
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, ro)
	}
}
