package console

import (
	"cmp"
	"context"
	"net/http"
	"slices"

	"github.com/frank-postage/frank/hub/releases"
)

// rolloutBook lists the rollouts of kiosk releases.
type rolloutBook interface {
	List(ctx context.Context) ([]releases.Rollout, error)
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
