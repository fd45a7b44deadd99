package gotrue

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
)

// registerConfigRoutes registers the tenant's auth config, with the field
// names of Supabase's Management API (GET and PATCH
// /v1/projects/{ref}/config/auth), for the tenant's service key or the
// platform admin token.
func (a *API) registerConfigRoutes() {
	a.srv.Handle(http.MethodGet, "/t/:tenant/admin/config/auth", a.withTenant(a.configAdmin(a.handleGetConfig)))
	a.srv.Handle(http.MethodPatch, "/t/:tenant/admin/config/auth", a.withTenant(a.configAdmin(a.handlePatchConfig)))
}

// configAdmin wraps h with a check for the tenant's service key or the
// platform admin token, and hands h the actor that presented it.
func (a *API) configAdmin(h func(w http.ResponseWriter, r *http.Request, t auth.Tenant, actor event.Actor)) tenantHandler {
	return a.adminCheck(true, h)
}

// adminCheck wraps h with the admin API's check; platform: the platform
// admin token is accepted too.
func (a *API) adminCheck(platform bool, h func(w http.ResponseWriter, r *http.Request, t auth.Tenant, actor event.Actor)) tenantHandler {
	return func(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
		actor, role, err := a.adminActor(r, t, platform)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), adminKey{}, adminCaller{actor: actor, role: role}))
		h(w, r, t, actor)
	}
}

func (a *API) handleGetConfig(w http.ResponseWriter, r *http.Request, t auth.Tenant, _ event.Actor) {
	st, err := a.auth.Settings(r.Context(), t)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	a.writeConfig(w, r, t, st)
}

// writeConfig answers the auth config: the settings and the presets'
// provider fields.
func (a *API) writeConfig(w http.ResponseWriter, r *http.Request, t auth.Tenant, st auth.Settings) {
	m := st.Map()
	presets, err := a.auth.PresetSettings(r.Context(), t)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	for k, v := range presets {
		m[k] = v
	}
	api.WriteJSON(w, http.StatusOK, m)
}

func (a *API) handlePatchConfig(w http.ResponseWriter, r *http.Request, t auth.Tenant, actor event.Actor) {
	var patch map[string]json.RawMessage
	if err := api.DecodeJSON(r, &patch); err != nil {
		a.writeError(w, r, err)
		return
	}
	if patch == nil {
		a.writeError(w, r, engine.NewError(engine.KindInvalid, auth.CodeValidationFailed, "The body must be a JSON object of auth config fields"))
		return
	}
	st, err := a.auth.UpdateSettings(r.Context(), t, clientOf(r), actor, patch)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	a.writeConfig(w, r, t, st)
}
