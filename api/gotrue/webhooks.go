package gotrue

import (
	"net/http"
	"strconv"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
	"github.com/keyshard/keyshard/webhook"
)

// registerWebhookRoutes: a tenant's webhook endpoints, managed by its
// owners and admins (their tokens), its service key or the platform admin.
func (a *API) registerWebhookRoutes() {
	if a.webhooks == nil {
		return
	}
	h := func(m, path string, fn func(w http.ResponseWriter, r *http.Request, t auth.Tenant, _ event.Actor)) {
		a.srv.Handle(m, "/t/:tenant/admin/webhooks"+path, a.withTenant(a.configAdmin(fn)))
	}
	h(http.MethodGet, "", a.handleListWebhooks)
	h(http.MethodPost, "", a.handleCreateWebhook)
	h(http.MethodGet, "/:id", a.handleGetWebhook)
	h(http.MethodPatch, "/:id", a.handleUpdateWebhook)
	h(http.MethodDelete, "/:id", a.handleDeleteWebhook)
	h(http.MethodGet, "/:id/deliveries", a.handleWebhookDeliveries)
	h(http.MethodPost, "/:id/test", a.handleTestWebhook)
	h(http.MethodPost, "/:id/rotate_secret", a.handleRotateWebhook)
	h(http.MethodPost, "/:id/replay", a.handleReplayWebhook)
}

func webhookJSON(e *webhook.Endpoint, secret string) map[string]any {
	out := map[string]any{"id": e.ID, "url": e.URL, "events": e.Events, "enabled": e.Enabled,
		"created_at": e.CreatedAt.Format(time.RFC3339Nano), "updated_at": e.UpdatedAt.Format(time.RFC3339Nano)}
	if e.DisabledReason != "" {
		out["disabled_reason"] = e.DisabledReason
	}
	if secret != "" {
		out["secret"] = secret
	}
	return out
}

func param(r *http.Request, name string) string {
	ps, _ := r.Context().Value(httprouter.ParamsKey).(httprouter.Params)
	return ps.ByName(name)
}

type webhookBody struct {
	URL     *string   `json:"url"`
	Events  *[]string `json:"events"`
	Enabled *bool     `json:"enabled"`
}

func (b webhookBody) request() webhook.EndpointRequest {
	return webhook.EndpointRequest{URL: b.URL, Events: b.Events, Enabled: b.Enabled}
}

func (a *API) handleListWebhooks(w http.ResponseWriter, r *http.Request, t auth.Tenant, _ event.Actor) {
	es, err := a.webhooks.List(r.Context(), t)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := make([]map[string]any, 0, len(es))
	for _, e := range es {
		out = append(out, webhookJSON(e, ""))
	}
	api.WriteJSON(w, http.StatusOK, map[string]any{"webhooks": out})
}

func (a *API) handleCreateWebhook(w http.ResponseWriter, r *http.Request, t auth.Tenant, _ event.Actor) {
	var b webhookBody
	if err := api.DecodeJSON(r, &b); err != nil {
		a.writeError(w, r, err)
		return
	}
	e, secret, err := a.webhooks.Create(r.Context(), t, clientOf(r), b.request())
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	noStore(w)
	api.WriteJSON(w, http.StatusCreated, webhookJSON(e, secret))
}

func (a *API) handleGetWebhook(w http.ResponseWriter, r *http.Request, t auth.Tenant, _ event.Actor) {
	e, err := a.webhooks.Get(r.Context(), t, param(r, "id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, webhookJSON(e, ""))
}

func (a *API) handleUpdateWebhook(w http.ResponseWriter, r *http.Request, t auth.Tenant, _ event.Actor) {
	var b webhookBody
	if err := api.DecodeJSON(r, &b); err != nil {
		a.writeError(w, r, err)
		return
	}
	e, err := a.webhooks.Update(r.Context(), t, clientOf(r), param(r, "id"), b.request())
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, webhookJSON(e, ""))
}

func (a *API) handleDeleteWebhook(w http.ResponseWriter, r *http.Request, t auth.Tenant, _ event.Actor) {
	if err := a.webhooks.Delete(r.Context(), t, clientOf(r), param(r, "id")); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) handleWebhookDeliveries(w http.ResponseWriter, r *http.Request, t auth.Tenant, _ event.Actor) {
	q := r.URL.Query()
	before, err1 := optInt(q.Get("before"))
	limit, err2 := optInt(q.Get("limit"))
	if err1 != nil || err2 != nil {
		a.writeError(w, r, engine.NewError(engine.KindInvalid, auth.CodeValidationFailed, "before and limit must be unsigned integers"))
		return
	}
	ds, err := a.webhooks.Deliveries(r.Context(), t, param(r, "id"), before, int(limit))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := make([]map[string]any, 0, len(ds))
	for _, d := range ds {
		item := map[string]any{"id": d.ID, "event_id": d.EventID, "event_type": d.EventType, "attempt": d.Attempt,
			"latency_ms": d.LatencyMS, "created_at": d.At.Format(time.RFC3339Nano), "status": nil, "error": nil}
		if d.Status != 0 {
			item["status"] = d.Status
		}
		if d.Error != "" {
			item["error"] = d.Error
		}
		out = append(out, item)
	}
	api.WriteJSON(w, http.StatusOK, map[string]any{"deliveries": out})
}

func optInt(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	return strconv.ParseInt(s, 10, 63)
}

func (a *API) handleTestWebhook(w http.ResponseWriter, r *http.Request, t auth.Tenant, _ event.Actor) {
	id, err := a.webhooks.Test(r.Context(), t, clientOf(r), param(r, "id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusAccepted, map[string]any{"event_id": id})
}

func (a *API) handleRotateWebhook(w http.ResponseWriter, r *http.Request, t auth.Tenant, _ event.Actor) {
	e, secret, err := a.webhooks.RotateSecret(r.Context(), t, clientOf(r), param(r, "id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	noStore(w)
	out := webhookJSON(e, secret)
	out["previous_secret_expires_at"] = e.UpdatedAt.Add(webhook.RotationOverlap).Format(time.RFC3339)
	api.WriteJSON(w, http.StatusOK, out)
}

func (a *API) handleReplayWebhook(w http.ResponseWriter, r *http.Request, t auth.Tenant, _ event.Actor) {
	var b struct {
		DeliveryID int64      `json:"delivery_id"`
		Since      *time.Time `json:"since"`
		Until      *time.Time `json:"until"`
	}
	if err := api.DecodeJSON(r, &b); err != nil {
		a.writeError(w, r, err)
		return
	}
	var since, until time.Time
	if b.DeliveryID == 0 {
		if b.Since == nil {
			a.writeError(w, r, engine.NewError(engine.KindInvalid, auth.CodeValidationFailed, "replay needs delivery_id, or since (and until)"))
			return
		}
		since, until = *b.Since, time.Now().Add(time.Hour)
		if b.Until != nil {
			until = *b.Until
		}
	}
	n, err := a.webhooks.Replay(r.Context(), t, clientOf(r), param(r, "id"), b.DeliveryID, since, until)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusAccepted, map[string]any{"replayed": n})
}
