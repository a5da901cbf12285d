package sqldb_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestCommands_FollowTheirDevice: after a device moves, alone or with its
// subtree, its commands are where it is: a viewer of the old place no
// longer reads them (404, args and all), a viewer of the new place does,
// and their later events carry the new path. Before, a command kept the
// path its device had when it was sent.
func TestCommands_FollowTheirDevice(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		now := time.UnixMilli(1_800_000_000_000).UTC()
		db.Now = func() time.Time { return now }
		f := newFixture(db)
		svc := sqldb.NewCommandService(db)
		ingest := sqldb.NewIngestService(db)
		ten := f.mustTenant(t, "moves")
		areaA := f.mustNode(t, ten.RootNodeID, "area a")
		areaB := f.mustNode(t, ten.RootNodeID, "area b")
		site := f.mustNode(t, areaA.ID, "site")
		dev := f.mustDevices(t, site.ID, 1)[0]
		viewerA, secretA := f.mustUser(t, ten.ID, "viewer a")
		f.mustGrant(t, viewerA.ID, areaA.ID, herd.RoleViewer)
		viewerB, secretB := f.mustUser(t, ten.ID, "viewer b")
		f.mustGrant(t, viewerB.ID, areaB.ID, herd.RoleViewer)
		asA, asB := f.as(t, secretA), f.as(t, secretB)

		// lastEvent returns the path of the command's last event.
		lastEvent := func(t *testing.T, id int64, typ string) string {
			t.Helper()
			evs, err := sqldb.NewOutboxService(db).OutboxEvents(ctx, ten.ID, 0, 10000)
			mustOK(t, err)
			for i := len(evs) - 1; i >= 0; i-- {
				if evs[i].SubjectType == herd.EventSubjectCommand && evs[i].SubjectID == id && evs[i].Type == typ {
					return evs[i].Path
				}
			}
			t.Fatalf("no %s event of command %d", typ, id)
			return ""
		}
		// moved checks who reads the command after a move to path.
		moved := func(t *testing.T, c *herd.Command, lost, gained context.Context, path string) {
			t.Helper()
			if got, err := svc.FindCommandByID(lost, c.ID); herd.ErrorCode(err) != herd.ENOTFOUND {
				t.Fatalf("the viewer who lost the device reads its command: %+v, %v", got, err)
			}
			got, err := svc.FindCommandByID(gained, c.ID)
			if err != nil {
				t.Fatalf("the viewer who gained the device: %v", err)
			} else if got.Path != path || string(got.Args) != string(c.Args) {
				t.Fatalf("command %+v, want it at %s", got, path)
			}
			list, err := svc.FindCommandsByDevice(gained, dev.ID, 10)
			mustOK(t, err)
			for _, l := range list {
				if l.Path != path {
					t.Fatalf("listed command %+v, want it at %s", l, path)
				}
			}
			open, err := svc.OpenCommands(ctx, dev.TenantID, dev.ID)
			mustOK(t, err)
			for _, o := range open {
				if o.Path != path {
					t.Fatalf("open command %+v, want it at %s", o, path)
				}
			}
		}
		send := func(t *testing.T) *herd.Command {
			t.Helper()
			c := &herd.Command{DeviceID: dev.ID, Name: "unlock", Args: json.RawMessage(`{"pin":"4711"}`), TTLSeconds: 60}
			mustOK(t, svc.CreateCommand(f.super, c))
			if got, err := svc.FindCommandByID(asA, c.ID); err != nil || got.Path != site.Path {
				t.Fatalf("viewer of area a before the move: %+v, %v", got, err)
			}
			return c
		}

		t.Run("MoveDevice", func(t *testing.T) {
			c := send(t)
			d, err := f.Devices.MoveDevice(f.super, dev.ID, areaB.ID)
			mustOK(t, err)
			moved(t, c, asA, asB, d.Path)
			mustOK(t, svc.MarkDelivered(ctx, []int64{c.ID}))
			if p := lastEvent(t, c.ID, herd.EventCommandDelivered); p != d.Path {
				t.Fatalf("command.delivered at %s, want the device's path %s", p, d.Path)
			}
			// And back: the viewer of area a reads it again.
			d, err = f.Devices.MoveDevice(f.super, dev.ID, site.ID)
			mustOK(t, err)
			moved(t, c, asB, asA, d.Path)
			mustOK(t, ingest.Ingest(ctx, []herd.IngestItem{{Kind: herd.IngestCommandAck, DeviceID: dev.ID, TenantID: ten.ID, At: now.UnixMilli(), Ack: herd.CommandAck{CommandID: c.ID, OK: true}}}))
			if p := lastEvent(t, c.ID, herd.EventCommandAcked); p != d.Path {
				t.Fatalf("command.acked at %s, want the device's path %s", p, d.Path)
			}
		})
		t.Run("MoveNode", func(t *testing.T) {
			c := send(t)
			n, err := f.Nodes.MoveNode(f.super, site.ID, areaB.ID)
			mustOK(t, err)
			moved(t, c, asA, asB, n.Path)
			now = now.Add(2 * time.Minute)
			if n, err := svc.ExpireCommands(ctx); err != nil || n != 1 {
				t.Fatalf("expired %d, %v", n, err)
			}
			if p := lastEvent(t, c.ID, herd.EventCommandExpired); p != n.Path {
				t.Fatalf("command.expired at %s, want the device's path %s", p, n.Path)
			}
		})
	})
}
