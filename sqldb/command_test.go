package sqldb_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestCommands: a command and its event commit together; the same
// idempotency key gives the first command back; delivery, the device's
// answer (once) and expiry each move it on with an event; roles apply.
func TestCommands(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		now := time.UnixMilli(1_800_000_000_000).UTC()
		db.Now = func() time.Time { return now }
		f := newFixture(db)
		ten := f.mustTenant(t, "cmd")
		site := f.mustNode(t, ten.RootNodeID, "site")
		ds := f.mustDevices(t, site.ID, 2)
		viewer, vsecret := f.mustUser(t, ten.ID, "viewer")
		f.mustGrant(t, viewer.ID, site.ID, herd.RoleViewer)
		op, osecret := f.mustUser(t, ten.ID, "operator")
		f.mustGrant(t, op.ID, site.ID, herd.RoleOperator)
		svc := sqldb.NewCommandService(db)

		if err := svc.CreateCommand(f.as(t, vsecret), &herd.Command{DeviceID: ds[0].ID, Name: "reboot"}); herd.ErrorCode(err) != herd.EFORBIDDEN {
			t.Fatalf("a viewer sent a command: %v", err)
		}
		for _, bad := range []*herd.Command{{DeviceID: ds[0].ID}, {DeviceID: ds[0].ID, Name: "re boot"}, {DeviceID: ds[0].ID, Name: "x", Args: json.RawMessage(`[1]`)}, {DeviceID: ds[0].ID, Name: "x", TTLSeconds: -1}} {
			if err := svc.CreateCommand(f.as(t, osecret), bad); herd.ErrorCode(err) != herd.EINVALID {
				t.Fatalf("command %+v: %v", bad, err)
			}
		}
		as := f.as(t, osecret)
		c := &herd.Command{DeviceID: ds[0].ID, Name: "reboot", Args: json.RawMessage(`{"delay_s":5}`), TTLSeconds: 60, IdempotencyKey: "k1"}
		if err := svc.CreateCommand(as, c); err != nil {
			t.Fatal(err)
		}
		if c.ID == 0 || c.Status != herd.CommandPending || c.DeviceKey != ds[0].Key || !c.ExpiresAt.Equal(now.Add(time.Minute)) {
			t.Fatalf("command %+v", c)
		}
		again := &herd.Command{DeviceID: ds[0].ID, Name: "reboot", Args: json.RawMessage(`{"delay_s":5}`), TTLSeconds: 60, IdempotencyKey: "k1"}
		if err := svc.CreateCommand(as, again); err != nil || again.ID != c.ID {
			t.Fatalf("same key: %d, %v; want the first command %d", again.ID, err, c.ID)
		}
		other := &herd.Command{DeviceID: ds[1].ID, Name: "reboot", Args: json.RawMessage(`{"delay_s":5}`), TTLSeconds: 60, IdempotencyKey: "k1"}
		if err := svc.CreateCommand(as, other); herd.ErrorCode(err) != herd.EKEYREUSED {
			t.Fatalf("same key, another command: %v", err)
		}
		evs, _ := sqldb.NewOutboxService(db).OutboxEvents(ctx, ten.ID, 0, 1000)
		created := 0
		for _, ev := range evs {
			if ev.Type == herd.EventCommandCreated {
				created++
			}
		}
		if created != 1 {
			t.Fatalf("%d command.created events, want 1", created)
		}
		if got, err := svc.FindCommandByID(f.as(t, vsecret), c.ID); err != nil || got.Name != "reboot" {
			t.Fatalf("viewer reads: %v, %v", got, err)
		}

		open, err := svc.OpenCommands(ctx, ds[0].TenantID, ds[0].ID)
		if err != nil || len(open) != 1 {
			t.Fatalf("open %v, %v", open, err)
		}
		if err := svc.MarkDelivered(ctx, []int64{c.ID}); err != nil {
			t.Fatal(err)
		}
		ingest := sqldb.NewIngestService(db)
		ack := func(cmd int64, device int64, ok bool) {
			t.Helper()
			if err := ingest.Ingest(ctx, []herd.IngestItem{{Kind: herd.IngestCommandAck, DeviceID: device, TenantID: ten.ID, At: now.UnixMilli(),
				Ack: herd.CommandAck{CommandID: cmd, OK: ok, Result: json.RawMessage(`{"uptime_s":3}`)}}}); err != nil {
				t.Fatal(err)
			}
		}
		ack(c.ID, ds[1].ID, false) // another device's answer: nothing
		ack(c.ID, ds[0].ID, true)
		ack(c.ID, ds[0].ID, false) // a repeat: nothing
		got, _ := svc.FindCommandByID(as, c.ID)
		if got.Status != herd.CommandAcked || got.DeliveredAt == nil || got.CompletedAt == nil || string(got.Result) != `{"uptime_s":3}` {
			t.Fatalf("after the ack %+v", got)
		}

		late := &herd.Command{DeviceID: ds[1].ID, Name: "ping", TTLSeconds: 1}
		if err := svc.CreateCommand(as, late); err != nil {
			t.Fatal(err)
		}
		if n, _ := svc.ExpireCommands(ctx); n != 0 {
			t.Fatalf("expired %d before the TTL", n)
		}
		now = now.Add(2 * time.Second)
		if n, err := svc.ExpireCommands(ctx); err != nil || n != 1 {
			t.Fatalf("expired %d, %v; want 1", n, err)
		}
		ack(late.ID, ds[1].ID, true) // too late: nothing
		if got, _ := svc.FindCommandByID(as, late.ID); got.Status != herd.CommandExpired {
			t.Fatalf("late command %s", got.Status)
		}
		list, err := svc.FindCommandsByDevice(as, ds[0].ID, 10)
		if err != nil || len(list) != 1 {
			t.Fatalf("list %v, %v", list, err)
		}
		evs, _ = sqldb.NewOutboxService(db).OutboxEvents(ctx, ten.ID, 0, 1000)
		var types []string
		for _, ev := range evs {
			if ev.SubjectType == herd.EventSubjectCommand {
				types = append(types, ev.Type)
			}
		}
		want := []string{herd.EventCommandCreated, herd.EventCommandDelivered, herd.EventCommandAcked, herd.EventCommandCreated, herd.EventCommandExpired}
		if len(types) != len(want) {
			t.Fatalf("command events %v, want %v", types, want)
		}
		for i := range want {
			if types[i] != want[i] {
				t.Fatalf("command events %v, want %v", types, want)
			}
		}
	})
}

// TestCommands_PendingOfOnlineDevices: the gateways' resend reads only
// connected devices' commands, so an offline backlog cannot crowd them out.
func TestCommands_PendingOfOnlineDevices(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		now := time.UnixMilli(1_800_000_000_000).UTC()
		db.Now = func() time.Time { return now }
		f := newFixture(db)
		ten := f.mustTenant(t, "pend")
		ds := f.mustDevices(t, ten.RootNodeID, 3)
		svc := sqldb.NewCommandService(db)
		for i, d := range ds {
			if err := svc.CreateCommand(f.super, &herd.Command{DeviceID: d.ID, Name: "reboot", TTLSeconds: 60, IdempotencyKey: fmt.Sprint("p", i)}); err != nil {
				t.Fatal(err)
			}
		}
		mustIngest(t, db, connectItem(ds[1], now.UnixMilli()))
		cs, err := svc.PendingCommands(ctx, now.Add(time.Second), 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) != 1 || cs[0].DeviceID != ds[1].ID {
			t.Fatalf("pending %+v, want only the online device's command", cs)
		}
	})
}
