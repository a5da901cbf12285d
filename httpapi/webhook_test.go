package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

func TestWebhooks(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db, func(s *httpapi.Server) { s.WebhookService = sqldb.NewWebhookService(db) })
		f := e.mustCreateFleet()
		ctx := context.Background()
		var created herd.Webhook
		t.Run("Create", func(t *testing.T) {
			r := e.do("POST", "/v1/webhooks", f.bobToken.Secret, map[string]any{"url": "https://example.com/hook", "event_types": []string{"device.*"}, "node_id": fmt.Sprint(f.n1.ID)})
			r.wantStatus(t, http.StatusCreated)
			r.decode(t, &created)
			if created.ID == 0 || len(created.Secret) < 32 || created.Path != f.n1.Path || created.Status != herd.WebhookActive {
				t.Fatalf("webhook %s", r.Body)
			}
		})
		t.Run("SecretShownOnce", func(t *testing.T) {
			r := e.do("GET", fmt.Sprintf("/v1/webhooks/%d", created.ID), f.bobToken.Secret, nil)
			r.wantStatus(t, http.StatusOK)
			var got map[string]any
			r.decode(t, &got)
			if _, ok := got["secret"]; ok || got["id"] != strconv.FormatInt(created.ID, 10) {
				t.Fatalf("view %s", r.Body)
			}
			ws, err := e.admin.FindWebhooks(ctx)
			if err != nil || len(ws) != 1 || ws[0].Secret != "" {
				t.Fatalf("list %+v, %v", ws, err)
			}
			evs, _ := sqldb.NewOutboxService(db).OutboxEvents(ctx, f.tenant.ID, 0, 10000)
			last := evs[len(evs)-1]
			if last.Type != herd.EventWebhookCreated || containsSecret(string(last.Payload), created.Secret) {
				t.Fatalf("event %s %s", last.Type, last.Payload)
			}
		})
		t.Run("ErrViewerMayNot", func(t *testing.T) {
			// alice views north; webhooks need the admin role.
			e.do("POST", "/v1/webhooks", f.aliceToken.Secret, map[string]any{"url": "https://example.com", "event_types": []string{"*"}, "node_id": fmt.Sprint(f.n1.ID)}).
				wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
			e.do("GET", fmt.Sprintf("/v1/webhooks/%d", created.ID), f.aliceToken.Secret, nil).wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
			r := e.do("GET", "/v1/webhooks", f.aliceToken.Secret, nil)
			r.wantStatus(t, http.StatusOK)
			if string(r.Body) != "{\"items\":[]}\n" {
				t.Fatalf("alice lists %s", r.Body)
			}
		})
		t.Run("ErrBadInput", func(t *testing.T) {
			e.do("POST", "/v1/webhooks", adminSecret, map[string]any{"url": "ftp://x", "event_types": []string{"*"}, "node_id": fmt.Sprint(f.n1.ID)}).
				wantError(t, http.StatusBadRequest, herd.EINVALID, "http or https")
			e.do("POST", "/v1/webhooks", adminSecret, map[string]any{"url": "https://x", "event_types": []string{"Bad Type"}, "node_id": fmt.Sprint(f.n1.ID)}).
				wantError(t, http.StatusBadRequest, herd.EINVALID, "Bad Type")
			e.do("POST", "/v1/webhooks", adminSecret, map[string]any{"url": "https://x", "event_types": []string{"*"}, "node_id": "999999"}).
				wantError(t, http.StatusNotFound, herd.ENOTFOUND)
			e.do("GET", fmt.Sprintf("/v1/webhooks/%d/deliveries?status=lost", created.ID), adminSecret, nil).
				wantError(t, http.StatusBadRequest, herd.EINVALID, "lost")
			e.do("GET", fmt.Sprintf("/v1/webhooks/%d/deliveries?limit=x", created.ID), adminSecret, nil).
				wantError(t, http.StatusBadRequest, herd.EINVALIDLIMIT)
		})
		t.Run("DeliveriesAndRedrive", func(t *testing.T) {
			ds, err := e.admin.FindDeliveries(ctx, created.ID, herd.DeliveryDead, 10)
			if err != nil || len(ds) != 0 {
				t.Fatalf("dead letters %v, %v", ds, err)
			}
			n, err := e.admin.RedriveWebhook(ctx, created.ID)
			if err != nil || n != 0 {
				t.Fatalf("redrive %d, %v", n, err)
			}
		})
		t.Run("Delete", func(t *testing.T) {
			e.do("DELETE", fmt.Sprintf("/v1/webhooks/%d", created.ID), f.bobToken.Secret, nil).wantStatus(t, http.StatusNoContent)
			e.do("GET", fmt.Sprintf("/v1/webhooks/%d", created.ID), f.bobToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
			e.do("DELETE", fmt.Sprintf("/v1/webhooks/%d", created.ID), f.bobToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
		})
	})
}

func containsSecret(s, secret string) bool { return secret != "" && strings.Contains(s, secret) }

func TestVerifyWebhook(t *testing.T) {
	const secret = "whsec_test"
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"1","type":"device.online"}`)
	sign := func(ts int64, b []byte) http.Header {
		h := http.Header{}
		h.Set(herd.HeaderWebhookTimestamp, strconv.FormatInt(ts, 10))
		h.Set(herd.HeaderWebhookSignature, herd.WebhookSignature(secret, ts, b))
		return h
	}
	for _, tt := range []struct {
		name   string
		header http.Header
		body   []byte
		secret string
		want   error
	}{
		{"valid", sign(now.Unix(), body), body, secret, nil},
		{"a minute old", sign(now.Unix()-60, body), body, secret, nil},
		{"tampered body", sign(now.Unix(), body), []byte(`{"id":"1","type":"device.offline"}`), secret, httpapi.ErrWebhookSignature},
		{"other secret", sign(now.Unix(), body), body, "whsec_other", httpapi.ErrWebhookSignature},
		{"six minutes old", sign(now.Unix()-360, body), body, secret, httpapi.ErrWebhookTimestamp},
		{"from the future", sign(now.Unix()+360, body), body, secret, httpapi.ErrWebhookTimestamp},
		{"no timestamp", http.Header{herd.HeaderWebhookSignature: {"v1=00"}}, body, secret, httpapi.ErrWebhookTimestamp},
		{"timestamp moved", func() http.Header {
			h := sign(now.Unix()-10, body)
			h.Set(herd.HeaderWebhookTimestamp, strconv.FormatInt(now.Unix(), 10))
			return h
		}(), body, secret, httpapi.ErrWebhookSignature},
		{"one of several", func() http.Header {
			h := sign(now.Unix(), body)
			h.Set(herd.HeaderWebhookSignature, "v1=deadbeef, "+h.Get(herd.HeaderWebhookSignature))
			return h
		}(), body, secret, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := httpapi.VerifyWebhook(tt.secret, tt.header, tt.body, now)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("VerifyWebhook = %v, want %v", err, tt.want)
			}
		})
	}
}
