package sqldb_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

type wantEvent struct {
	typ, subject string
	id           int64
	path         string
}

func (f *fixture) events(tb testing.TB, tenantID int64) []*herd.Event {
	tb.Helper()
	evs, err := sqldb.NewOutboxService(f.db).OutboxEvents(context.Background(), tenantID, 0, 1<<20)
	if err != nil {
		tb.Fatal(err)
	}
	return evs
}

// checkSeq fails unless the events' sequence numbers are 1..N in order.
func checkSeq(tb testing.TB, evs []*herd.Event) {
	tb.Helper()
	for i, e := range evs {
		if e.Seq != int64(i+1) {
			tb.Fatalf("event %d (%s) has seq %d, want %d", i, e.Type, e.Seq, i+1)
		}
	}
}

// TestEvents checks that every state change writes its outbox event, with
// its type, subject, path and payload, in the same transaction; that a
// tenant's sequence is gapless; and that failed changes write nothing.
func TestEvents(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		t.Run("OK", func(t *testing.T) {
			ten := f.mustTenant(t, "acme")
			rootPath := herd.ChildPath("/", ten.RootNodeID)
			want := []wantEvent{
				{herd.EventTenantCreated, herd.EventSubjectTenant, ten.ID, rootPath},
				{herd.EventNodeCreated, herd.EventSubjectNode, ten.RootNodeID, rootPath},
			}
			north := f.mustNode(t, ten.RootNodeID, "north")
			south := f.mustNode(t, ten.RootNodeID, "south")
			want = append(want,
				wantEvent{herd.EventNodeCreated, herd.EventSubjectNode, north.ID, north.Path},
				wantEvent{herd.EventNodeCreated, herd.EventSubjectNode, south.ID, south.Path})
			ds := f.mustDevices(t, north.ID, 3)
			for _, d := range ds {
				want = append(want, wantEvent{herd.EventDeviceCreated, herd.EventSubjectDevice, d.ID, north.Path})
			}
			d, err := f.Devices.MoveDevice(f.super, ds[0].ID, south.ID)
			mustOK(t, err)
			want = append(want, wantEvent{herd.EventDeviceMoved, herd.EventSubjectDevice, d.ID, south.Path})
			mustOK(t, f.Devices.DeleteDevice(f.super, ds[1].ID))
			want = append(want, wantEvent{herd.EventDeviceDeleted, herd.EventSubjectDevice, ds[1].ID, north.Path})
			n, err := f.Nodes.MoveNode(f.super, north.ID, south.ID)
			mustOK(t, err)
			want = append(want, wantEvent{herd.EventNodeMoved, herd.EventSubjectNode, north.ID, n.Path})
			u := &herd.User{TenantID: ten.ID, Name: "ana"}
			mustOK(t, f.Users.CreateUser(f.super, u))
			want = append(want, wantEvent{herd.EventUserCreated, herd.EventSubjectUser, u.ID, rootPath})
			tok, err := f.Users.CreateToken(f.super, u.ID)
			mustOK(t, err)
			want = append(want, wantEvent{herd.EventTokenCreated, herd.EventSubjectToken, tok.ID, rootPath})
			g := f.mustGrant(t, u.ID, south.ID, herd.RoleViewer)
			want = append(want, wantEvent{herd.EventGrantCreated, herd.EventSubjectGrant, g.ID, south.Path})
			mustOK(t, f.Grants.DeleteGrant(f.super, g.ID))
			want = append(want, wantEvent{herd.EventGrantDeleted, herd.EventSubjectGrant, g.ID, south.Path})
			mustOK(t, f.Users.DeleteToken(f.super, tok.ID))
			want = append(want, wantEvent{herd.EventTokenDeleted, herd.EventSubjectToken, tok.ID, rootPath})

			evs := f.events(t, ten.ID)
			if len(evs) != len(want) {
				for _, e := range evs {
					t.Logf("%d %s %s %d %s", e.Seq, e.Type, e.SubjectType, e.SubjectID, e.Path)
				}
				t.Fatalf("%d events, want %d", len(evs), len(want))
			}
			checkSeq(t, evs)
			for i, e := range evs {
				w := want[i]
				if e.Type != w.typ || e.SubjectType != w.subject || e.SubjectID != w.id || e.Path != w.path || e.TenantID != ten.ID {
					t.Fatalf("event %d: got %s %s %d %q tenant %d, want %s %s %d %q", i, e.Type, e.SubjectType, e.SubjectID, e.Path, e.TenantID, w.typ, w.subject, w.id, w.path)
				}
				if e.ID == 0 || e.CreatedAt.IsZero() {
					t.Fatalf("event %d: %+v", i, e)
				}
				var body map[string]any
				if err := json.Unmarshal(e.Payload, &body); err != nil {
					t.Fatalf("event %d payload %s: %v", i, e.Payload, err)
				}
				// The payload names its subject.
				subject := body
				if inner, ok := body["device"].(map[string]any); ok {
					subject = inner
				} else if inner, ok := body["node"].(map[string]any); ok {
					subject = inner
				}
				if subject["id"] != strconv.FormatInt(w.id, 10) {
					t.Fatalf("event %d (%s) payload %s does not name %d", i, e.Type, e.Payload, w.id)
				}
				if strings.HasSuffix(e.Type, ".moved") && body["old_path"] == nil {
					t.Fatalf("event %d (%s) payload %s has no old_path", i, e.Type, e.Payload)
				}
			}
			for _, e := range evs {
				if strings.Contains(string(e.Payload), tok.Secret) || strings.Contains(string(e.Payload), tok.Secret[len(herd.TokenPrefix):]) {
					t.Fatalf("event %s carries the token secret", e.Type)
				}
			}
			var created herd.Device
			mustOK(t, json.Unmarshal(evs[4].Payload, &created))
			if created.ID != ds[0].ID || created.Key != ds[0].Key || created.Path != north.Path {
				t.Fatalf("device.created payload %s", evs[4].Payload)
			}
		})
		t.Run("OKTenantsHaveOwnSequences", func(t *testing.T) {
			a := f.mustTenant(t, "a")
			b := f.mustTenant(t, "b")
			f.mustDevices(t, a.RootNodeID, 4)
			f.mustDevices(t, b.RootNodeID, 1)
			f.mustDevices(t, a.RootNodeID, 1)
			for _, tt := range []struct {
				tenant int64
				n      int
			}{{a.ID, 7}, {b.ID, 3}} {
				evs := f.events(t, tt.tenant)
				if len(evs) != tt.n {
					t.Fatalf("tenant %d: %d events, want %d", tt.tenant, len(evs), tt.n)
				}
				checkSeq(t, evs)
			}
			// The outbox pages by sequence.
			evs, err := sqldb.NewOutboxService(db).OutboxEvents(context.Background(), a.ID, 3, 2)
			mustOK(t, err)
			if len(evs) != 2 || evs[0].Seq != 4 || evs[1].Seq != 5 {
				t.Fatalf("page after 3: %+v", evs)
			}
		})
		t.Run("OKConcurrentWriters", func(t *testing.T) {
			ten := f.mustTenant(t, "busy")
			site := f.mustNode(t, ten.RootNodeID, "site")
			const writers, each = 4, 5
			var wg sync.WaitGroup
			errs := make(chan error, writers*each)
			for range writers {
				wg.Go(func() {
					for range each {
						errs <- f.Devices.CreateDevices(f.super, []*herd.Device{{NodeID: site.ID, Key: nextKey("c")}})
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				mustOK(t, err)
			}
			evs := f.events(t, ten.ID)
			if len(evs) != 3+writers*each {
				t.Fatalf("%d events, want %d", len(evs), 3+writers*each)
			}
			checkSeq(t, evs)
		})
		t.Run("ErrFailedChangesWriteNothing", func(t *testing.T) {
			ten := f.mustTenant(t, "quiet")
			a := f.mustNode(t, ten.RootNodeID, "a")
			b := f.mustNode(t, a.ID, "b")
			d := f.mustDevices(t, a.ID, 1)[0]
			u, secret := f.mustUser(t, ten.ID, "viewer")
			g := f.mustGrant(t, u.ID, a.ID, herd.RoleViewer)
			ctx := f.as(t, secret)
			before := len(f.events(t, ten.ID))
			for name, err := range map[string]error{
				"batch conflict":    f.Devices.CreateDevices(f.super, []*herd.Device{{NodeID: a.ID, Key: nextKey("n")}, {NodeID: a.ID, Key: d.Key}}),
				"forbidden create":  f.Devices.CreateDevices(ctx, []*herd.Device{{NodeID: a.ID, Key: nextKey("n")}}),
				"move under itself": errOf(f.Nodes.MoveNode(f.super, a.ID, b.ID)),
				"forbidden move":    errOf(f.Devices.MoveDevice(ctx, d.ID, b.ID)),
				"forbidden delete":  f.Devices.DeleteDevice(ctx, d.ID),
				"duplicate grant":   f.Grants.CreateGrant(f.super, &herd.Grant{UserID: u.ID, NodeID: a.ID, Role: herd.RoleAdmin}),
				"forbidden revoke":  f.Grants.DeleteGrant(ctx, g.ID),
				"forbidden node":    f.Nodes.CreateNode(ctx, &herd.Node{ParentID: a.ID, Kind: "k", Name: "n"}),
				"forbidden user":    f.Users.CreateUser(ctx, &herd.User{TenantID: ten.ID, Name: "n"}),
			} {
				if err == nil {
					t.Fatalf("%s: succeeded", name)
				}
			}
			if after := len(f.events(t, ten.ID)); after != before {
				t.Fatalf("%d events before the failed changes, %d after", before, after)
			}
			// The sequence goes on without a hole after the failures.
			f.mustDevices(t, b.ID, 1)
			checkSeq(t, f.events(t, ten.ID))
		})
	})
}

func errOf[T any](_ T, err error) error { return err }

// TestFindEvents: the event log as a user sees it: only events under their
// grants, in order, with the head, paged by next_after; a place before the
// retention horizon or past the head is resync_required.
func TestFindEvents(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		f := newFixture(db)
		ten := f.mustTenant(t, "log")
		north, south := f.mustNode(t, ten.RootNodeID, "north"), f.mustNode(t, ten.RootNodeID, "south")
		f.mustDevices(t, north.ID, 3)
		f.mustDevices(t, south.ID, 2)
		alice, secret := f.mustUser(t, ten.ID, "alice")
		f.mustGrant(t, alice.ID, north.ID, herd.RoleViewer)
		f.mustDevices(t, north.ID, 1)
		as := f.as(t, secret)
		svc := sqldb.NewEventService(db)

		all, err := sqldb.NewOutboxService(db).OutboxEvents(ctx, ten.ID, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		head := all[len(all)-1].Seq
		var want []int64
		for _, ev := range all {
			if herd.PathUnder(ev.Path, north.Path) {
				want = append(want, ev.Seq)
			}
		}
		var got []int64
		after := int64(0)
		for pages := 0; ; pages++ {
			page, err := svc.FindEvents(as, ten.ID, after, 2)
			if err != nil {
				t.Fatal(err)
			}
			if page.Head != head {
				t.Fatalf("head %d, want %d", page.Head, head)
			}
			for _, ev := range page.Items {
				if !herd.PathUnder(ev.Path, north.Path) {
					t.Fatalf("alice got an event of %s, outside her grant on %s", ev.Path, north.Path)
				}
				got = append(got, ev.Seq)
			}
			if page.NextAfter <= after && page.NextAfter != head {
				t.Fatalf("next_after %d does not move on from %d", page.NextAfter, after)
			}
			after = page.NextAfter
			if after == head {
				break
			}
			if pages > 100 {
				t.Fatal("paging does not end")
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("alice's log %v, want %v", got, want)
		}
		// Another tenant's log does not exist for her; the super-admin sees all.
		other := f.mustTenant(t, "other")
		if _, err := svc.FindEvents(as, other.ID, 0, 10); herd.ErrorCode(err) != herd.ENOTFOUND {
			t.Fatalf("other tenant: %v", err)
		}
		if page, err := svc.FindEvents(f.super, ten.ID, 0, 1000); err != nil || len(page.Items) != len(all) {
			t.Fatalf("super-admin got %v, %v; want all %d", page, err, len(all))
		}
		if _, err := svc.FindEvents(as, ten.ID, head+1, 10); herd.ErrorCode(err) != herd.ERESYNC {
			t.Fatalf("after past the head: %v", err)
		}
		if _, err := svc.FindEvents(as, ten.ID, 0, herd.MaxEventsPage+1); herd.ErrorCode(err) != herd.EINVALIDLIMIT {
			t.Fatalf("limit: %v", err)
		}

		// Published and older than the cut: pruned; the horizon moves.
		out := sqldb.NewOutboxService(db)
		if _, err := out.ClaimOutbox(ctx, "r", time.Minute, 10); err != nil {
			t.Fatal(err)
		}
		if err := out.MarkPublished(ctx, "r", ten.ID, head, time.Minute); err != nil {
			t.Fatal(err)
		}
		n, err := db.PruneEvents(ctx, time.Now().Add(time.Hour))
		if err != nil || n != int64(len(all)) {
			t.Fatalf("pruned %d, %v; want %d", n, err, len(all))
		}
		if _, err := svc.FindEvents(as, ten.ID, 0, 10); herd.ErrorCode(err) != herd.ERESYNC {
			t.Fatalf("after 0 once pruned: %v", err)
		}
		if page, err := svc.FindEvents(as, ten.ID, head, 10); err != nil || len(page.Items) != 0 || page.NextAfter != head {
			t.Fatalf("at the head once pruned: %+v, %v", page, err)
		}
		if page, err := svc.FindEvents(as, ten.ID, -1, 10); err != nil || page.Head != head || page.NextAfter != head {
			t.Fatalf("the head only: %+v, %v", page, err)
		}
	})
}
