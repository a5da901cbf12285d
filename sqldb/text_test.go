package sqldb_test

import (
	"context"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestAuthenticateDevice_KeyNotText: a device key that no store can hold
// (not UTF-8, or with a NUL) is a bad key like any unknown one, not a store
// error: PostgreSQL refuses such text even in a WHERE clause.
func TestAuthenticateDevice_KeyNotText(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		creds := sqldb.NewCredentialService(db)
		for _, key := range []string{"k\xff", "k\x00"} {
			_, err := creds.AuthenticateDevice(context.Background(), key, sqldb.NewTokenSecret())
			wantCode(t, err, herd.EUNAUTHORIZED)
		}
	})
}

// TestCreateCommand_IdempotencyKeyNotText: a command's Idempotency-Key is
// kept on its row, so it is text by the one rule: one that no store can
// hold is EINVALID on both stores (PostgreSQL refused it as a store error,
// SQLite stored it), and no command is made.
func TestCreateCommand_IdempotencyKeyNotText(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "t")
		dev := f.mustDevices(t, ten.RootNodeID, 1)[0]
		cmds := sqldb.NewCommandService(db)
		for _, key := range []string{"k\x00", "k\xff"} {
			err := cmds.CreateCommand(f.super, &herd.Command{DeviceID: dev.ID, Name: "reboot", IdempotencyKey: key})
			wantCode(t, err, herd.EINVALID)
		}
		got, err := cmds.FindCommandsByDevice(f.super, dev.ID, 10)
		mustOK(t, err)
		if len(got) != 0 {
			t.Fatalf("commands made with keys that are not text: %+v", got)
		}
	})
}
