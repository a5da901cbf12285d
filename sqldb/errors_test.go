package sqldb_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestErrors_SayWhichOperation: a store failure names the exported method
// it came from and keeps its cause; an application error reaches the
// caller as it was, code and message, for httpapi to map.
func TestErrors_SayWhichOperation(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "errs")
		site := f.mustNode(t, ten.RootNodeID, "site")
		d := f.mustDevices(t, site.ID, 1)[0]
		cancelled, cancel := context.WithCancel(f.super)
		cancel()
		cmds := sqldb.NewCommandService(db)
		for op, err := range map[string]error{
			"sqldb.MoveDevice":      errOf(f.Devices.MoveDevice(cancelled, d.ID, site.ID)),
			"sqldb.FindDeviceByID":  errOf(f.Devices.FindDeviceByID(cancelled, d.ID)),
			"sqldb.CreateCommand":   cmds.CreateCommand(cancelled, &herd.Command{DeviceID: d.ID, Name: "reboot"}),
			"sqldb.FindCommandByID": errOf(cmds.FindCommandByID(cancelled, 1)),
			"sqldb.MoveNode":        errOf(f.Nodes.MoveNode(cancelled, site.ID, ten.RootNodeID)),
			"sqldb.OutboxEvents":    errOf(sqldb.NewOutboxService(db).OutboxEvents(cancelled, ten.ID, 0, 10)),
		} {
			if err == nil || !strings.HasPrefix(err.Error(), op+": ") || !errors.Is(err, context.Canceled) {
				t.Errorf("%s with a cancelled context: %v, want %q and the cause", op, err, op+": …")
			}
			if herd.ErrorCode(err) != herd.EINTERNAL {
				t.Errorf("%s: code %s", op, herd.ErrorCode(err))
			}
		}
		err := errOf(f.Devices.MoveDevice(f.super, d.ID+1000, site.ID))
		var he *herd.Error
		if !errors.As(err, &he) || he.Code != herd.ENOTFOUND || herd.ErrorMessage(err) != "device "+itoa(d.ID+1000)+" not found" {
			t.Fatalf("an unknown device: %v, want %s unchanged", err, herd.ENOTFOUND)
		}
	})
}
