package httpapi_test

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestDeviceConfigAPI: a device starts with nothing desired and in sync;
// PUT sets its desired config (operator role, Idempotency-Key required, a
// retry with the key replays), writes device.config_desired once, and
// refuses a version that does not exist; a viewer of the device reads its
// config and may not set it.
func TestDeviceConfigAPI(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := openConfigServer(t, db)
		f := e.mustCreateFleet()
		ctx := t.Context()
		p := &herd.ConfigProfile{TenantID: f.tenant.ID, Name: "sensor", Schema: []byte(rateSchema)}
		if err := e.admin.CreateConfigProfile(ctx, p); err != nil {
			t.Fatal(err)
		}
		for _, doc := range []string{`{"rate_s":10}`, `{"rate_s":20}`} {
			if err := e.admin.CreateConfigVersion(ctx, &herd.ConfigVersion{ProfileID: p.ID, Document: []byte(doc)}); err != nil {
				t.Fatal(err)
			}
		}
		dev := f.devices["n1-a"]
		path := fmt.Sprintf("/v1/devices/%d/config", dev.ID)

		var c herd.DeviceConfig
		r := e.do("GET", path, f.aliceToken.Secret, nil)
		r.wantStatus(t, http.StatusOK)
		r.decode(t, &c)
		if c.Desired != nil || c.Reported != nil || !c.InSync || c.DeviceID != dev.ID {
			t.Fatalf("new device's config %s", r.Body)
		}

		body := fmt.Sprintf(`{"profile_id":"%d","version":1}`, p.ID)
		e.doKey("PUT", path, f.bobToken.Secret, "", body).wantError(t, http.StatusBadRequest, herd.EINVALID, "Idempotency-Key")
		first := e.doKey("PUT", path, f.bobToken.Secret, "cfg-1", body)
		first.wantStatus(t, http.StatusOK)
		first.decode(t, &c)
		if c.Desired == nil || c.Desired.ProfileID != p.ID || c.Desired.Version != 1 || c.InSync {
			t.Fatalf("after PUT %s", first.Body)
		}
		again := e.doKey("PUT", path, f.bobToken.Secret, "cfg-1", body)
		again.wantStatus(t, http.StatusOK)
		if again.Header.Get(httpapi.HeaderReplayed) != "true" || !bytes.Equal(first.Body, again.Body) {
			t.Fatalf("replay %q %s, first %s", again.Header.Get(httpapi.HeaderReplayed), again.Body, first.Body)
		}
		// The same config under a new key changes nothing either.
		e.doKey("PUT", path, f.bobToken.Secret, "cfg-2", body).wantStatus(t, http.StatusOK)
		if n := countEvents(t, db, herd.EventDeviceConfigDesired); n != 1 {
			t.Fatalf("%d device.config_desired events, want 1", n)
		}

		before := rowCounts(t, db)
		e.doKey("PUT", path, f.bobToken.Secret, "cfg-3", fmt.Sprintf(`{"profile_id":"%d","version":3}`, p.ID)).wantError(t, http.StatusNotFound, herd.ENOTFOUND, "no version 3")
		e.doKey("PUT", path, f.bobToken.Secret, "cfg-4", fmt.Sprintf(`{"profile_id":"%d","version":0}`, p.ID)).wantError(t, http.StatusBadRequest, herd.EINVALID, "version")
		e.doKey("PUT", path, f.bobToken.Secret, "cfg-5", `{"version":1}`).wantError(t, http.StatusBadRequest, herd.EINVALID, "profile_id")
		e.doKey("PUT", path, f.bobToken.Secret, "cfg-6", `{"profile_id":"999999","version":1}`).wantError(t, http.StatusNotFound, herd.ENOTFOUND, "config profile 999999 not found")
		// alice views the device: she reads its config, may not set it.
		e.doKey("PUT", path, f.aliceToken.Secret, "cfg-7", body).wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
		if after := rowCounts(t, db); after != before {
			t.Fatalf("a refused PUT wrote: before %s, after %s", before, after)
		}
		// Outside bob's grants the device is not found.
		e.do("GET", fmt.Sprintf("/v1/devices/%d/config", f.devices["s1-a"].ID), f.bobToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)

		got, err := e.admin.SetDesiredConfig(ctx, dev.ID, p.ID, 2)
		if err != nil || got.Desired.Version != 2 {
			t.Fatalf("client set: %+v, %v", got, err)
		}
		got, err = e.admin.FindDeviceConfig(ctx, dev.ID)
		if err != nil || got.Desired == nil || got.Desired.Version != 2 || got.InSync {
			t.Fatalf("client get: %+v, %v", got, err)
		}
		if n := countEvents(t, db, herd.EventDeviceConfigDesired); n != 2 {
			t.Fatalf("%d device.config_desired events, want 2", n)
		}
	})
}
