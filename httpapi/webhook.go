package httpapi

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/herd-iot/herd"
)

type webhookCreateRequest struct {
	URL        string   `json:"url"`
	EventTypes []string `json:"event_types"`
	NodeID     id       `json:"node_id"`
}

func (s *Server) webhooks(w http.ResponseWriter, r *http.Request) herd.WebhookService {
	if s.WebhookService == nil {
		Error(w, r, herd.Errorf(herd.ENOTFOUND, "webhooks are not served here"))
	}
	return s.WebhookService
}

// handleWebhookCreate handles POST /v1/webhooks. The answer carries the
// signing secret, the only time it is shown.
func (s *Server) handleWebhookCreate(w http.ResponseWriter, r *http.Request) {
	svc := s.webhooks(w, r)
	if svc == nil {
		return
	}
	var req webhookCreateRequest
	if err := decodeJSON(w, r, MaxBodySize, &req); err != nil {
		Error(w, r, err)
		return
	}
	wh := &herd.Webhook{URL: req.URL, EventTypes: req.EventTypes, NodeID: int64(req.NodeID)}
	if err := svc.CreateWebhook(r.Context(), wh); err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, wh)
}

// handleWebhookList handles GET /v1/webhooks.
func (s *Server) handleWebhookList(w http.ResponseWriter, r *http.Request) {
	svc := s.webhooks(w, r)
	if svc == nil {
		return
	}
	ws, err := svc.FindWebhooks(r.Context())
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, listResponse[*herd.Webhook]{Items: ws})
}

// handleWebhookView handles GET /v1/webhooks/{id}.
func (s *Server) handleWebhookView(w http.ResponseWriter, r *http.Request) {
	svc := s.webhooks(w, r)
	if svc == nil {
		return
	}
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	wh, err := svc.FindWebhookByID(r.Context(), id)
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wh)
}

// handleWebhookDelete handles DELETE /v1/webhooks/{id}.
func (s *Server) handleWebhookDelete(w http.ResponseWriter, r *http.Request) {
	svc := s.webhooks(w, r)
	if svc == nil {
		return
	}
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	if err := svc.DeleteWebhook(r.Context(), id); err != nil {
		Error(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleWebhookDeliveries handles GET /v1/webhooks/{id}/deliveries
// (?status=pending|delivered|dead, ?limit=N, default 100): status dead is
// the dead-letter list.
func (s *Server) handleWebhookDeliveries(w http.ResponseWriter, r *http.Request) {
	svc := s.webhooks(w, r)
	if svc == nil {
		return
	}
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	limit, err := queryLimit(r, 100)
	if err != nil {
		Error(w, r, err)
		return
	}
	ds, err := svc.FindDeliveries(r.Context(), id, r.URL.Query().Get("status"), limit)
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, listResponse[*herd.WebhookDelivery]{Items: ds})
}

type redriveResponse struct {
	Redriven int `json:"redriven"`
}

// handleWebhookRedrive handles POST /v1/webhooks/{id}/redrive: the
// dead-letter list goes back to the queue, and a disabled subscription is
// enabled again.
func (s *Server) handleWebhookRedrive(w http.ResponseWriter, r *http.Request) {
	svc := s.webhooks(w, r)
	if svc == nil {
		return
	}
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	n, err := svc.RedriveWebhook(r.Context(), id)
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, redriveResponse{Redriven: n})
}

var _ herd.WebhookService = (*Client)(nil)

// CreateWebhook creates a subscription and fills in wh, secret included.
func (c *Client) CreateWebhook(ctx context.Context, wh *herd.Webhook) error {
	req := webhookCreateRequest{URL: wh.URL, EventTypes: wh.EventTypes, NodeID: id(wh.NodeID)}
	return c.do(ctx, http.MethodPost, "/v1/webhooks", nil, req, wh)
}

// FindWebhooks lists the subscriptions the token administers.
func (c *Client) FindWebhooks(ctx context.Context) ([]*herd.Webhook, error) {
	var resp listResponse[*herd.Webhook]
	err := c.do(ctx, http.MethodGet, "/v1/webhooks", nil, nil, &resp)
	return resp.Items, err
}

// FindWebhookByID returns one subscription.
func (c *Client) FindWebhookByID(ctx context.Context, webhookID int64) (*herd.Webhook, error) {
	var wh herd.Webhook
	if err := c.do(ctx, http.MethodGet, idPath("/v1/webhooks/%d", webhookID), nil, nil, &wh); err != nil {
		return nil, err
	}
	return &wh, nil
}

// DeleteWebhook deletes a subscription.
func (c *Client) DeleteWebhook(ctx context.Context, webhookID int64) error {
	return c.do(ctx, http.MethodDelete, idPath("/v1/webhooks/%d", webhookID), nil, nil, nil)
}

// FindDeliveries lists a subscription's deliveries.
func (c *Client) FindDeliveries(ctx context.Context, webhookID int64, status string, limit int) ([]*herd.WebhookDelivery, error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if status != "" {
		q.Set("status", status)
	}
	var resp listResponse[*herd.WebhookDelivery]
	err := c.do(ctx, http.MethodGet, idPath("/v1/webhooks/%d/deliveries", webhookID), q, nil, &resp)
	return resp.Items, err
}

// RedriveWebhook puts a subscription's dead deliveries back in the queue.
func (c *Client) RedriveWebhook(ctx context.Context, webhookID int64) (int, error) {
	var resp redriveResponse
	err := c.do(ctx, http.MethodPost, idPath("/v1/webhooks/%d/redrive", webhookID), nil, nil, &resp)
	return resp.Redriven, err
}

// WebhookTolerance is how far a delivery's timestamp may be from the
// receiver's clock: older deliveries are refused as possible replays.
const WebhookTolerance = 5 * time.Minute

// Errors of VerifyWebhook.
var (
	ErrWebhookSignature = errors.New("webhook signature does not match")
	ErrWebhookTimestamp = errors.New("webhook timestamp missing or outside the tolerance")
)

// VerifyWebhook checks a delivery the way a receiver must before acting on
// it: the Herd-Signature header holds the HMAC-SHA256 of the Herd-Timestamp
// header, a dot and the raw body, keyed by the subscription's secret, and the
// timestamp is within WebhookTolerance of now. Several signatures may be
// given, comma-separated; one that matches is enough. A verified delivery
// may still be a repeat: deduplicate by the Herd-Event-Id header.
func VerifyWebhook(secret string, h http.Header, body []byte, now time.Time) error {
	ts, err := strconv.ParseInt(h.Get(herd.HeaderWebhookTimestamp), 10, 64)
	if err != nil {
		return ErrWebhookTimestamp
	}
	if d := now.Sub(time.Unix(ts, 0)); d > WebhookTolerance || d < -WebhookTolerance {
		return fmt.Errorf("%w: %s from now", ErrWebhookTimestamp, d.Round(time.Second))
	}
	want := herd.WebhookSignature(secret, ts, body)
	for _, sig := range strings.Split(h.Get(herd.HeaderWebhookSignature), ",") {
		if hmac.Equal([]byte(strings.TrimSpace(sig)), []byte(want)) {
			return nil
		}
	}
	return ErrWebhookSignature
}
