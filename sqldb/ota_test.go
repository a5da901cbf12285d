package sqldb_test

import (
	"database/sql"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// otaFixture inserts rollouts and their members with SQL, as the rollout
// controller's store leaves them, so that the gateway's read and the
// ingest of progress are tested on their own.
type otaFixture struct {
	*fixture
	t   *testing.T
	fws *sqldb.FirmwareService
}

func (o *otaFixture) firmware(tenantID int64, version string) *herd.Firmware {
	o.t.Helper()
	fw := &herd.Firmware{TenantID: tenantID, Model: "th-200", Version: version, URL: "https://fw.example/th-200-" + version + ".bin", SHA256: strings.Repeat("5e", 32), Size: 4096}
	mustOK(o.t, o.fws.CreateFirmware(o.super, fw))
	return fw
}

// rollout inserts a rollout of kind and state on node n moving to fw.
func (o *otaFixture) rollout(n *herd.Node, kind, state string, fw *herd.Firmware) int64 {
	o.t.Helper()
	var id int64
	err := o.db.SQL().QueryRowContext(o.t.Context(), o.db.Rebind(`INSERT INTO rollouts (tenant_id, node_id, path, name, kind, spec, target_version, firmware_id, state, created_at)
VALUES (?, ?, ?, ?, ?, '{}', ?, ?, ?, ?) RETURNING id`), n.TenantID, n.ID, n.Path, "fw "+fw.Version+" "+state, kind, fw.Version, fw.ID, state, time.Now().UnixMilli()).Scan(&id)
	mustOK(o.t, err)
	return id
}

// member inserts d as member ord of the rollout, in state, with prev as
// the firmware a rollback gives it back (nil for none).
func (o *otaFixture) member(rollout int64, d *herd.Device, ord int64, state string, prev *herd.Firmware) {
	o.t.Helper()
	var prevID, prevVersion any
	if prev != nil {
		prevID, prevVersion = prev.ID, prev.Version
	}
	_, err := o.db.SQL().ExecContext(o.t.Context(), o.db.Rebind(`INSERT INTO rollout_members (rollout_id, tenant_id, device_id, ord, state, told_at, prev_firmware, prev_firmware_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)`), rollout, d.TenantID, d.ID, ord, state, time.Now().UnixMilli(), prevVersion, prevID)
	mustOK(o.t, err)
}

// memberOTA is what a member row records of the device's progress.
type memberOTA struct {
	state, err string
	at         sql.NullInt64
}

func (o *otaFixture) memberOTA(rollout int64, d *herd.Device) memberOTA {
	o.t.Helper()
	var m memberOTA
	mustOK(o.t, o.db.SQL().QueryRowContext(o.t.Context(), o.db.Rebind(`SELECT ota_state, error, ota_at FROM rollout_members WHERE rollout_id = ? AND device_id = ?`), rollout, d.ID).Scan(&m.state, &m.err, &m.at))
	return m
}

// TestConfigService_PendingOTA: a told member of an active firmware
// rollout is sent the rollout's firmware, a reverting one the firmware it
// had; a device that reports that version already, a member of a rollout
// that is over (succeeded, or aborted with on_abort stop) or of a config
// rollout, a member that answered, and any
// device read in another tenant get nothing. The read states the tenant
// of every table it joins.
func TestConfigService_PendingOTA(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		o := &otaFixture{fixture: newFixture(db), t: t, fws: sqldb.NewFirmwareService(db)}
		configs := sqldb.NewConfigService(db)
		a, b := o.mustTenant(t, "a"), o.mustTenant(t, "b")
		aSite, bSite := o.mustNode(t, a.RootNodeID, "site a"), o.mustNode(t, b.RootNodeID, "site b")
		ds := o.mustDevices(t, aSite.ID, 8)
		told, reverting, current, over, config, applied, paused, stopped := ds[0], ds[1], ds[2], ds[3], ds[4], ds[5], ds[6], ds[7]
		bDev := o.mustDevices(t, bSite.ID, 1)[0]
		old, next := o.firmware(a.ID, "1.0.0"), o.firmware(a.ID, "1.5.0")
		bFw := o.firmware(b.ID, "1.5.0")

		running := o.rollout(aSite, herd.RolloutFirmware, herd.RolloutRunning, next)
		o.member(running, told, 1, herd.MemberTold, old)
		o.member(running, reverting, 2, herd.MemberReverting, old)
		o.member(running, current, 3, herd.MemberTold, old)
		o.member(running, applied, 4, herd.MemberApplied, old)
		// The device came back with the new firmware: it has it.
		mustIngest(t, db, readingItem(current, time.Now().UnixMilli(), herd.Reading{TS: time.Now().UnixMilli(), Has: herd.ReadingFirmware, Firmware: "1.5.0"}))
		done := o.rollout(aSite, herd.RolloutFirmware, herd.RolloutSucceeded, next)
		o.member(done, over, 1, herd.MemberTold, old)
		// Aborted with on_abort stop: stopping means no device is asked again.
		halted := o.rollout(aSite, herd.RolloutFirmware, herd.RolloutAborted, next)
		o.member(halted, stopped, 1, herd.MemberTold, old)
		cfg := o.rollout(aSite, herd.RolloutConfig, herd.RolloutRunning, next)
		o.member(cfg, config, 1, herd.MemberTold, old)
		held := o.rollout(aSite, herd.RolloutFirmware, herd.RolloutPaused, next)
		o.member(held, paused, 1, herd.MemberTold, old)
		bRollout := o.rollout(bSite, herd.RolloutFirmware, herd.RolloutRunning, bFw)
		o.member(bRollout, bDev, 1, herd.MemberTold, nil)

		var mu sync.Mutex
		var reads []string
		db.QueryHook = func(q string, _ []any) {
			mu.Lock()
			defer mu.Unlock()
			if strings.Contains(q, "rollout_members") {
				reads = append(reads, q)
			}
		}
		pending := func(tenantID int64, d *herd.Device) *herd.OTARequest {
			t.Helper()
			r, err := configs.PendingOTA(t.Context(), tenantID, d.ID)
			mustOK(t, err)
			return r
		}
		want := func(name string, r *herd.OTARequest, d *herd.Device, rollout int64, fw *herd.Firmware) {
			t.Helper()
			if r == nil {
				t.Fatalf("%s: no pending update, want rollout %d firmware %s", name, rollout, fw.Version)
			}
			if r.DeviceID != d.ID || r.DeviceKey != d.Key || r.RolloutID != rollout || r.Firmware.ID != fw.ID || r.Firmware.Version != fw.Version ||
				r.Firmware.URL != fw.URL || r.Firmware.SHA256 != fw.SHA256 || r.Firmware.Size != fw.Size {
				t.Fatalf("%s: %+v, want device %d %s, rollout %d, firmware %+v", name, r, d.ID, d.Key, rollout, fw)
			}
		}

		t.Run("Told", func(t *testing.T) { want("told", pending(a.ID, told), told, running, next) })
		t.Run("Reverting", func(t *testing.T) { want("reverting", pending(a.ID, reverting), reverting, running, old) })
		t.Run("PausedStillSends", func(t *testing.T) { want("paused", pending(a.ID, paused), paused, held, next) })
		t.Run("OtherTenantOwn", func(t *testing.T) { want("tenant b", pending(b.ID, bDev), bDev, bRollout, bFw) })
		for name, c := range map[string]struct {
			tenant int64
			d      *herd.Device
		}{
			"AlreadyOnIt":      {a.ID, current},
			"RolloutOver":      {a.ID, over},
			"RolloutStopped":   {a.ID, stopped},
			"ConfigRollout":    {a.ID, config},
			"Answered":         {a.ID, applied},
			"OtherTenant":      {a.ID, bDev},
			"OtherTenantsView": {b.ID, told},
		} {
			t.Run(name, func(t *testing.T) {
				if r := pending(c.tenant, c.d); r != nil {
					t.Fatalf("pending update %+v, want none", r)
				}
			})
		}
		db.QueryHook = nil
		if len(reads) == 0 {
			t.Fatal("PendingOTA read no member rows")
		}
		for _, q := range reads {
			if n := strings.Count(q, "tenant_id = ?"); n < 4 {
				t.Errorf("PendingOTA's read states the tenant %d times, want once for each of its 4 tables: %s", n, q)
			}
		}
	})
}

// TestIngest_OTAProgress: a device's progress report sets its member row's
// ota_state and ota_at, a failure also its error; a repeated report
// changes nothing of it, an older one does not overwrite a newer; a report
// naming another rollout, a member of a rollout that is over and a member
// that already answered are left alone; the report is still an event.
func TestIngest_OTAProgress(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		o := &otaFixture{fixture: newFixture(db), t: t, fws: sqldb.NewFirmwareService(db)}
		ten := o.mustTenant(t, "a")
		site := o.mustNode(t, ten.RootNodeID, "site")
		ds := o.mustDevices(t, site.ID, 3)
		d, settled, gone := ds[0], ds[1], ds[2]
		old, next := o.firmware(ten.ID, "1.0.0"), o.firmware(ten.ID, "1.5.0")
		running := o.rollout(site, herd.RolloutFirmware, herd.RolloutRunning, next)
		o.member(running, d, 1, herd.MemberTold, old)
		o.member(running, settled, 2, herd.MemberApplied, old)
		done := o.rollout(site, herd.RolloutFirmware, herd.RolloutSucceeded, next)
		o.member(done, d, 1, herd.MemberTold, old)
		o.member(done, gone, 2, herd.MemberTold, old)

		at0 := time.Now().UnixMilli()
		progress := func(dev *herd.Device, at int64, p herd.OTAProgress) herd.IngestItem {
			return herd.IngestItem{Kind: herd.IngestOTAProgress, DeviceID: dev.ID, TenantID: dev.TenantID, At: at, OTA: p}
		}
		rid := func(id int64) string { return strconv.FormatInt(id, 10) }
		check := func(name string, rollout int64, dev *herd.Device, state, errText string, at int64) {
			t.Helper()
			m := o.memberOTA(rollout, dev)
			if m.state != state || m.err != errText || (at == 0 && m.at.Valid) || (at != 0 && m.at.Int64 != at) {
				t.Fatalf("%s: member (rollout %d, device %d) ota_state %q error %q ota_at %v, want %q %q %d", name, rollout, dev.ID, m.state, m.err, m.at, state, errText, at)
			}
		}

		mustIngest(t, db, progress(d, at0, herd.OTAProgress{State: herd.OTADownloading}))
		check("downloading", running, d, herd.OTADownloading, "", at0)
		check("downloading, rollout over", done, d, "", "", 0)

		failed := herd.OTAProgress{RolloutID: rid(running), State: herd.OTAFailed, Error: "sha256 mismatch"}
		mustIngest(t, db, progress(d, at0+10, failed))
		check("failed", running, d, herd.OTAFailed, "sha256 mismatch", at0+10)
		// The same report again, as a device resends it after a lost
		// PUBACK, and then an older one arriving late.
		mustIngest(t, db, progress(d, at0+10, failed))
		check("failed again", running, d, herd.OTAFailed, "sha256 mismatch", at0+10)
		mustIngest(t, db, progress(d, at0+5, herd.OTAProgress{State: herd.OTAInstalling}))
		check("older report", running, d, herd.OTAFailed, "sha256 mismatch", at0+10)

		// A report naming another rollout is not this one's.
		mustIngest(t, db, progress(d, at0+20, herd.OTAProgress{RolloutID: rid(done), State: herd.OTARebooting}))
		check("other rollout named", running, d, herd.OTAFailed, "sha256 mismatch", at0+10)
		mustIngest(t, db, progress(gone, at0+20, herd.OTAProgress{State: herd.OTAFailed, Error: "flash full"}))
		check("rollout over", done, gone, "", "", 0)
		mustIngest(t, db, progress(settled, at0+20, herd.OTAProgress{State: herd.OTAFailed, Error: "late"}))
		check("answered", running, settled, "", "", 0)

		evs, err := sqldb.NewOutboxService(db).OutboxEvents(t.Context(), ten.ID, 0, 100)
		mustOK(t, err)
		n := 0
		for _, e := range evs {
			if e.Type == herd.EventDeviceOTAProgress {
				n++
			}
		}
		if n != 7 {
			t.Fatalf("%d device.ota_progress events, want 7, one for each report", n)
		}
	})
}
