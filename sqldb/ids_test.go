package sqldb_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestIDsNeverReused: deleting the row with the highest id of a table
// does not free that id for the next row, of the same tenant or another.
// Before migration 0010 SQLite gave the next row the largest id plus one:
// tenant B's next device took the id of A's deleted one, and with it A's
// commands and their args; a new token took an old token's apps feed
// (app-<token id>) and idempotency records.
func TestIDsNeverReused(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		cmds := sqldb.NewCommandService(db)
		a := f.mustTenant(t, "a")
		b := f.mustTenant(t, "b")
		bUser, bSecret := f.mustUser(t, b.ID, "b admin")
		f.mustGrant(t, bUser.ID, b.RootNodeID, herd.RoleAdmin)
		asB := f.as(t, bSecret)

		t.Run("Device", func(t *testing.T) {
			aDev := f.mustDevices(t, a.RootNodeID, 1)[0]
			unlock := &herd.Command{DeviceID: aDev.ID, Name: "unlock", Args: json.RawMessage(`{"pin":"4711"}`)}
			mustOK(t, cmds.CreateCommand(f.super, unlock))
			mustOK(t, f.Devices.DeleteDevice(f.super, aDev.ID))
			bDev := &herd.Device{NodeID: b.RootNodeID, Key: nextKey("b")}
			mustOK(t, f.Devices.CreateDevices(asB, []*herd.Device{bDev}))
			if bDev.ID <= aDev.ID {
				t.Fatalf("B's new device got id %d after A's device %d was deleted", bDev.ID, aDev.ID)
			}
			got, err := cmds.FindCommandsByDevice(asB, bDev.ID, 10)
			mustOK(t, err)
			if len(got) != 0 {
				t.Fatalf("B's new device has commands %+v", got)
			}
			if _, err := cmds.FindCommandByID(f.super, unlock.ID); herd.ErrorCode(err) != herd.ENOTFOUND {
				t.Fatalf("the deleted device's command: %v, want it gone with its device", err)
			}
		})
		t.Run("Grant", func(t *testing.T) {
			aUser, _ := f.mustUser(t, a.ID, "a user")
			aGrant := f.mustGrant(t, aUser.ID, a.RootNodeID, herd.RoleViewer)
			mustOK(t, f.Grants.DeleteGrant(f.super, aGrant.ID))
			bViewer, _ := f.mustUser(t, b.ID, "b viewer")
			g := &herd.Grant{UserID: bViewer.ID, NodeID: b.RootNodeID, Role: herd.RoleViewer}
			mustOK(t, f.Grants.CreateGrant(asB, g))
			if g.ID <= aGrant.ID {
				t.Fatalf("B's new grant got id %d after A's grant %d was deleted", g.ID, aGrant.ID)
			}
		})
		t.Run("Token", func(t *testing.T) {
			aUser, _ := f.mustUser(t, a.ID, "a app")
			aTok, err := f.Users.CreateToken(f.super, aUser.ID)
			mustOK(t, err)
			mustOK(t, f.Users.DeleteToken(f.super, aTok.ID))
			bTok, err := f.Users.CreateToken(asB, bUser.ID)
			mustOK(t, err)
			if bTok.ID <= aTok.ID {
				t.Fatalf("B's new token got id %d after A's token %d was deleted: it would inherit the apps feed app-%d", bTok.ID, aTok.ID, aTok.ID)
			}
		})
		t.Run("SameTenant", func(t *testing.T) {
			d := f.mustDevices(t, b.RootNodeID, 1)[0]
			mustOK(t, f.Devices.DeleteDevice(asB, d.ID))
			again := f.mustDevices(t, b.RootNodeID, 1)[0]
			if again.ID <= d.ID {
				t.Fatalf("a new device got id %d after device %d was deleted", again.ID, d.ID)
			}
		})
	})
}

// TestIDSpaceExhausted_SQLite: an AUTOINCREMENT table at the largest
// rowid answers SQLITE_FULL, which herd reports as the id space running
// out (503 id_space_exhausted), not as a full disk.
func TestIDSpaceExhausted_SQLite(t *testing.T) {
	t.Parallel()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	f := newFixture(db)
	ten := f.mustTenant(t, "full")
	if _, err := db.SQL().Exec(`UPDATE sqlite_sequence SET seq = 9223372036854775807 WHERE name = 'nodes'`); err != nil {
		t.Fatal(err)
	}
	err := f.Nodes.CreateNode(f.super, &herd.Node{ParentID: ten.RootNodeID, Kind: "site", Name: "one too many"})
	if !errors.Is(err, herd.ErrIDSpaceExhausted) {
		t.Fatalf("got %v, want %v", err, herd.ErrIDSpaceExhausted)
	}
}

// TestCommands_SuperTokenKeysApart: a super-admin's token and a user's
// token may have the same id (they live in two tables); the same
// Idempotency-Key from each makes two commands, and neither sees the
// other's.
func TestCommands_SuperTokenKeysApart(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		cmds := sqldb.NewCommandService(db)
		a := f.mustTenant(t, "a")
		b := f.mustTenant(t, "b")
		aDev := f.mustDevices(t, a.RootNodeID, 1)[0]
		bDev := f.mustDevices(t, b.RootNodeID, 1)[0]
		u, secret := f.mustUser(t, b.ID, "b operator")
		f.mustGrant(t, u.ID, b.RootNodeID, herd.RoleOperator)
		asB := f.as(t, secret)
		super := herd.NewContextWithActor(context.Background(), &herd.Actor{Super: true, TokenID: herd.ActorFromContext(asB).TokenID})
		first := &herd.Command{DeviceID: aDev.ID, Name: "unlock", Args: json.RawMessage(`{"pin":"4711"}`), IdempotencyKey: "k"}
		mustOK(t, cmds.CreateCommand(super, first))
		second := &herd.Command{DeviceID: bDev.ID, Name: "unlock", IdempotencyKey: "k"}
		if err := cmds.CreateCommand(asB, second); err != nil {
			t.Fatalf("B's command with the key the super-admin used: %v", err)
		}
		if second.ID == first.ID || second.TenantID != b.ID {
			t.Fatalf("B's command %+v, the super-admin's %+v", second, first)
		}
	})
}
