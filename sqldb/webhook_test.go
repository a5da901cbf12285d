package sqldb_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestWebhookQueue_Claims: a result recorded after its claim ran out and
// another dispatcher took the delivery changes nothing; a restart under
// the same name takes back its claims but leaves a retry's wait alone.
func TestWebhookQueue_Claims(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		now := time.UnixMilli(1_800_000_000_000).UTC()
		db.Now = func() time.Time { return now }
		f := newFixture(db)
		ten := f.mustTenant(t, "hooks")
		q := sqldb.NewWebhookService(db)
		w := &herd.Webhook{NodeID: ten.RootNodeID, URL: "https://example.com/h?token=s3cret", EventTypes: []string{"device.created"}}
		if err := q.CreateWebhook(f.super, w); err != nil {
			t.Fatal(err)
		}
		f.mustDevices(t, ten.RootNodeID, 1)
		evs, _ := sqldb.NewOutboxService(db).OutboxEvents(ctx, ten.ID, 0, 100)
		created := evs[len(evs)-1] // webhook.created, then device.created
		if created.Type != herd.EventDeviceCreated {
			t.Fatalf("last event %s", created.Type)
		}
		if hook := evs[len(evs)-2]; hook.Type != herd.EventWebhookCreated || string(hook.Payload) == "" || strings.Contains(string(hook.Payload), "s3cret") {
			t.Fatalf("webhook.created carries %s", hook.Payload)
		}
		applied, jobs, err := q.EnqueueWebhooks(ctx, "webhooks", []*herd.Event{created}, "a", time.Second)
		if err != nil || !applied[0] || len(jobs) != 1 {
			t.Fatalf("enqueue: %v %d %v", applied, len(jobs), err)
		}
		first := jobs[0]
		// a's claim runs out; b takes the delivery.
		now = now.Add(2 * time.Second)
		again, err := q.ClaimDeliveries(ctx, "b", time.Minute, 10)
		if err != nil || len(again) != 1 || again[0].DeliveryID != first.DeliveryID {
			t.Fatalf("b claimed %v, %v", again, err)
		}
		// a's late result is dropped; b's counts.
		if err := q.RecordAttempts(ctx, []herd.AttemptResult{{Job: first, Outcome: herd.AttemptGone, Status: 410}}); err != nil {
			t.Fatal(err)
		}
		if wh, _ := q.FindWebhookByID(f.super, w.ID); wh.Status != herd.WebhookActive {
			t.Fatal("a stale 410 disabled the subscription")
		}
		if err := q.RecordAttempts(ctx, []herd.AttemptResult{{Job: again[0], Outcome: herd.AttemptRetry, Status: 500, Reason: "http_500", NextAt: now.Add(time.Hour)}}); err != nil {
			t.Fatal(err)
		}
		ds, _ := q.FindDeliveries(f.super, w.ID, "", 10)
		if len(ds) != 1 || ds[0].Attempts != 1 || ds[0].LastReason != "http_500" {
			t.Fatalf("deliveries %+v", ds[0])
		}
		// b restarts: its retry still waits an hour.
		if err := q.ReleaseClaims(ctx, "b", now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if due, _ := q.ClaimDeliveries(ctx, "b", time.Minute, 10); len(due) != 0 {
			t.Fatalf("a restart made a waiting retry due: %v", due)
		}
		// A claim of an earlier life is taken back at once.
		now = now.Add(2 * time.Hour)
		if c, _ := q.ClaimDeliveries(ctx, "c", 30*time.Second, 10); len(c) != 1 {
			t.Fatalf("c claimed %d, want the due retry", len(c))
		}
		if err := q.ReleaseClaims(ctx, "c", now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if c, _ := q.ClaimDeliveries(ctx, "c", 30*time.Second, 10); len(c) != 1 {
			t.Fatalf("after c's restart it claimed %d, want its released claim", len(c))
		}
	})
}
