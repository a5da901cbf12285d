package sqldb_test

import (
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestRolloutService_CreateRolloutRefusals: no matching device is
// EINVALID, a viewer or operator is EFORBIDDEN, another tenant's profile
// is ENOTFOUND, and a device in an active config rollout is left out of
// the next.
func TestRolloutService_CreateRolloutRefusals(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newRolloutFleet(t, db, 2)
		none := configRollout(f, 2)
		none.Target.Filter = []string{"key:eq:no-such-device"}
		wantCode(t, f.rollouts.CreateRollout(f.super, none), herd.EINVALID)

		for _, role := range []herd.Role{herd.RoleViewer, herd.RoleOperator} {
			u, secret := f.mustUser(t, f.ten.ID, nextKey("user"))
			f.mustGrant(t, u.ID, f.ten.RootNodeID, role)
			wantCode(t, f.rollouts.CreateRollout(f.as(t, secret), configRollout(f, 2)), herd.EFORBIDDEN)
		}

		other := newRolloutFleet(t, db, 1)
		foreign := configRollout(f, 2)
		foreign.Payload.ProfileID = other.profile.ID
		wantCode(t, f.rollouts.CreateRollout(f.super, foreign), herd.ENOTFOUND)

		first := configRollout(f, 2)
		mustOK(t, f.rollouts.CreateRollout(f.super, first))
		if first.Members != int64(len(f.devices)) {
			t.Fatalf("%d members, want %d", first.Members, len(f.devices))
		}
		wantCode(t, f.rollouts.CreateRollout(f.super, configRollout(f, 3)), herd.EINVALID)
	})
}
