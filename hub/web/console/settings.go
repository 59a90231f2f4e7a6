package console

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/settings"
	"github.com/frank-postage/frank/hub/stock"
	"github.com/frank-postage/frank/protocol"
)

// centralConfig is the kiosks' central configuration; changes go out to
// the kiosks at once.
type centralConfig interface {
	Get(ctx context.Context, scope string) (protocol.KioskSettings, error)
	Set(ctx context.Context, scope string, v protocol.KioskSettings, by string) error
	SetIf(ctx context.Context, scope string, v protocol.KioskSettings, by, revision string) error
	Staff(ctx context.Context, storeID string) ([]settings.Member, error)
	AddStaff(ctx context.Context, storeID, name, pin, badge, by string) error
	RevokeStaff(ctx context.Context, storeID, name, by string) error
}

// settingsView is the settings page of the fleet, one store or one kiosk.
type settingsView struct {
	Scope    string                 `json:"scope"`
	Store    string                 `json:"store,omitempty"`
	Kiosk    string                 `json:"kiosk,omitempty"`
	Settings protocol.KioskSettings `json:"settings"`
	Revision string                 `json:"revision"` // settings.Revision of Settings: the form saves only over these
	Staff    []settings.Member      `json:"staff,omitempty"`
}

// Settings routes name their scope by kind: the fleet's (no id), a
// store's or a kiosk's ({id}).
const (
	fleetSettings = iota
	storeSettings
	kioskSettings
)

// settingsScope is the scope a settings route of kind names.
func settingsScope(r *http.Request, kind int) (scope, storeID, kioskID string) {
	switch id := chi.URLParam(r, "id"); kind {
	case storeSettings:
		return settings.StoreScope(id), id, ""
	case kioskSettings:
		return settings.KioskScope(id), "", id
	}
	return settings.Fleet, "", ""
}

// settingsPath is where a scope's settings page is.
func settingsPath(storeID, kioskID string) string {
	switch {
	case storeID != "":
		return "/console/stores/" + url.PathEscape(storeID)
	case kioskID != "":
		return "/console/kiosks/" + url.PathEscape(kioskID) + "/settings"
	}
	return "/console/settings"
}

func (c *Console) settingsOf(ctx context.Context, scope, storeID, kioskID string) (*settingsView, error) {
	v := &settingsView{Scope: scope, Store: storeID, Kiosk: kioskID}
	var err error
	if v.Settings, err = c.Config.Get(ctx, v.Scope); err != nil {
		return nil, err
	}
	v.Revision = settings.Revision(v.Settings)
	if storeID != "" {
		if v.Staff, err = c.Config.Staff(ctx, storeID); err != nil {
			return nil, err
		}
		for i := range v.Staff {
			v.Staff[i].PINHash, v.Staff[i].BadgeSHA256 = "", "" // never shown
		}
	}
	return v, nil
}

// settingsPage shows the fleet's settings (/settings), a store's with its
// staff (/stores/{id}), or a kiosk's own (/kiosks/{id}/settings); ops only.
func (c *Console) settingsPage(kind int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { c.showSettings(w, r, kind) }
}

func (c *Console) showSettings(w http.ResponseWriter, r *http.Request, kind int) {
	scope, storeID, kioskID := settingsScope(r, kind)
	if kioskID != "" {
		ks, err := c.Kiosks.List(r.Context())
		if err != nil {
			c.fail(w, r, err)
			return
		}
		if !slices.ContainsFunc(ks, func(k fleet.Kiosk) bool { return k.ID == kioskID }) {
			http.Error(w, "no such kiosk", http.StatusNotFound)
			return
		}
	}
	v, err := c.settingsOf(r.Context(), scope, storeID, kioskID)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	title := "Fleet settings"
	switch {
	case storeID != "":
		title = "Store " + storeID
	case kioskID != "":
		title = "Kiosk " + kioskID + " settings"
	}
	c.render(w, r, http.StatusOK, "settings.html", page{Title: title, Data: v})
}

// formSettings reads the settings form; an empty field inherits.
func formSettings(r *http.Request) (protocol.KioskSettings, error) {
	num := func(name string) (int, error) {
		s := strings.TrimSpace(r.PostFormValue(name))
		if s == "" {
			return 0, nil
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			return 0, protocol.Errorf(protocol.CodeInvalidRequest, "%s: want a whole number", name)
		}
		return n, nil
	}
	var v protocol.KioskSettings
	var errs []error
	var err error
	v.RemedyWindowS, err = num("remedy_window_s")
	errs = append(errs, err)
	v.IdleTimeoutS, err = num("idle_timeout_s")
	errs = append(errs, err)
	v.LabelsLow, err = num("labels_low")
	errs = append(errs, err)
	v.HeartbeatS, err = num("heartbeat_s")
	errs = append(errs, err)
	v.Language, v.PaperAlert = r.PostFormValue("language"), r.PostFormValue("paper_alert")
	if err := errors.Join(errs...); err != nil {
		return v, err
	}
	return v, v.Validate()
}

func (c *Console) saveSettings(kind int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { c.setSettings(w, r, kind) }
}

func (c *Console) setSettings(w http.ResponseWriter, r *http.Request, kind int) {
	scope, storeID, kioskID := settingsScope(r, kind)
	back := settingsPath(storeID, kioskID)
	flash := "Settings saved and sent to the kiosks."
	v, err := formSettings(r)
	if err == nil {
		// Over the settings the form showed only: another operator's
		// save since then is not undone unseen.
		err = c.Config.SetIf(r.Context(), scope, v, current(r).Subject.Login, r.PostFormValue("revision"))
	}
	if err != nil {
		flash = "Not saved: " + err.Error()
	}
	c.Log.Info("kiosk settings from the console", "scope", scope, "by", current(r).Subject.Login, "err", err)
	c.Sessions.Flash(w, r, flash)
	http.Redirect(w, r, back, http.StatusSeeOther)
}

func (c *Console) addStaff(w http.ResponseWriter, r *http.Request) {
	storeID := chi.URLParam(r, "id")
	name := r.PostFormValue("name")
	flash := name + " may now open staff mode at the store's kiosks."
	if err := c.Config.AddStaff(r.Context(), storeID, name, r.PostFormValue("pin"), strings.TrimSpace(r.PostFormValue("badge")), current(r).Subject.Login); err != nil {
		flash = "Not added: " + err.Error()
	}
	c.Sessions.Flash(w, r, flash)
	http.Redirect(w, r, "/console/stores/"+url.PathEscape(storeID), http.StatusSeeOther)
}

func (c *Console) revokeStaff(w http.ResponseWriter, r *http.Request) {
	storeID, name := chi.URLParam(r, "id"), r.PostFormValue("name")
	flash := name + " revoked at every kiosk of the store."
	if err := c.Config.RevokeStaff(r.Context(), storeID, name, current(r).Subject.Login); err != nil {
		flash = "Not revoked: " + err.Error()
	}
	c.Log.Warn("staff revoked from the console", "store", storeID, "name", name, "by", current(r).Subject.Login)
	c.Sessions.Flash(w, r, flash)
	http.Redirect(w, r, "/console/stores/"+url.PathEscape(storeID), http.StatusSeeOther)
}

// The operator API's side.

// apiKnown answers not_found, and false, when the kiosk or store a
// settings route names is not one the hub has: settings saved for a
// mistyped id would reach no kiosk, and reading them would show {}.
func (c *Console) apiKnown(w http.ResponseWriter, r *http.Request, storeID, kioskID string) bool {
	if storeID == "" && kioskID == "" {
		return true
	}
	ks, err := c.Kiosks.List(r.Context())
	if err != nil {
		c.apiFail(w, r, err)
		return false
	}
	if kioskID != "" {
		if !slices.ContainsFunc(ks, func(k fleet.Kiosk) bool { return k.ID == kioskID }) {
			writeError(w, protocol.Errorf(protocol.CodeNotFound, "no kiosk %s", kioskID))
			return false
		}
		return true
	}
	// A store is made with its first kiosk or its first sheets.
	if slices.ContainsFunc(ks, func(k fleet.Kiosk) bool { return k.Store == storeID }) {
		return true
	}
	batches, err := c.Stock.Batches(r.Context())
	if err != nil {
		c.apiFail(w, r, err)
		return false
	}
	if !slices.ContainsFunc(batches, func(b stock.Batch) bool { return b.Store == storeID }) {
		writeError(w, protocol.Errorf(protocol.CodeNotFound, "no store %s", storeID))
		return false
	}
	return true
}

func (c *Console) apiSettings(kind int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		scope, storeID, kioskID := settingsScope(r, kind)
		if !c.apiKnown(w, r, storeID, kioskID) {
			return
		}
		v, err := c.Config.Get(r.Context(), scope)
		if err != nil {
			c.apiFail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func (c *Console) apiSetSettings(kind int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var v protocol.KioskSettings
		if !readJSON(w, r, &v) {
			return
		}
		scope, storeID, kioskID := settingsScope(r, kind)
		if !c.apiKnown(w, r, storeID, kioskID) {
			return
		}
		if err := c.Config.Set(r.Context(), scope, v, current(r).Subject.Login); err != nil {
			c.apiInvalid(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func (c *Console) apiStaff(w http.ResponseWriter, r *http.Request) {
	if !c.apiKnown(w, r, chi.URLParam(r, "id"), "") {
		return
	}
	v, err := c.settingsOf(r.Context(), settings.StoreScope(chi.URLParam(r, "id")), chi.URLParam(r, "id"), "")
	if err != nil {
		c.apiFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, append([]settings.Member{}, v.Staff...))
}

func (c *Console) apiAddStaff(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name  string `json:"name"`
		PIN   string `json:"pin"`
		Badge string `json:"badge"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	if err := c.Config.AddStaff(r.Context(), chi.URLParam(r, "id"), req.Name, req.PIN, req.Badge, current(r).Subject.Login); err != nil {
		c.apiInvalid(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"store": chi.URLParam(r, "id"), "name": strings.TrimSpace(req.Name)})
}

func (c *Console) apiRevokeStaff(w http.ResponseWriter, r *http.Request) {
	// chi gives the path segment as sent when the request escaped more
	// than Go would ("Smith%2C%20Ann", as url.PathEscape makes it): the
	// member's name is the segment unescaped.
	name, err := url.PathUnescape(chi.URLParam(r, "name"))
	if err != nil {
		writeError(w, protocol.Errorf(protocol.CodeInvalidRequest, "name: %s", err.Error()))
		return
	}
	if err := c.Config.RevokeStaff(r.Context(), chi.URLParam(r, "id"), name, current(r).Subject.Login); err != nil {
		c.apiInvalid(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"store": chi.URLParam(r, "id"), "name": name, "revoked_by": current(r).Subject.Login})
}

// apiInvalid answers a refused change 400, and anything else 500.
func (c *Console) apiInvalid(w http.ResponseWriter, r *http.Request, err error) {
	if e := protocol.AsError(err); e.Code == protocol.CodeInvalidRequest {
		writeError(w, protocol.Errorf(protocol.CodeInvalidRequest, "%s", e.Message))
		return
	}
	c.apiFail(w, r, err)
}
