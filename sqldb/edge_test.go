package sqldb_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// at0 is an arrival time far from the test's clock, so that nothing here
// depends on the wall clock.
const at0 = int64(1_750_000_000_000)

func readingItem(d *herd.Device, at int64, r herd.Reading) herd.IngestItem {
	return herd.IngestItem{Kind: herd.IngestReading, DeviceID: d.ID, TenantID: d.TenantID, At: at, Reading: r}
}

func connectItem(d *herd.Device, at int64) herd.IngestItem {
	return herd.IngestItem{Kind: herd.IngestConnect, DeviceID: d.ID, TenantID: d.TenantID, At: at}
}

func disconnectItem(d *herd.Device, at int64) herd.IngestItem {
	return herd.IngestItem{Kind: herd.IngestDisconnect, DeviceID: d.ID, TenantID: d.TenantID, At: at}
}

func mustIngest(tb testing.TB, db *sqldb.DB, items ...herd.IngestItem) {
	tb.Helper()
	if err := sqldb.NewIngestService(db).Ingest(context.Background(), items); err != nil {
		tb.Fatalf("ingest %d items: %v", len(items), err)
	}
}

func (f *fixture) mustFind(tb testing.TB, id int64) *herd.Device {
	tb.Helper()
	d, err := f.Devices.FindDeviceByID(f.super, id)
	if err != nil {
		tb.Fatalf("find device %d: %v", id, err)
	}
	return d
}

// historyCount returns how many readings of the device the history holds.
func historyCount(tb testing.TB, db *sqldb.DB, deviceID int64) int {
	tb.Helper()
	var n int
	if err := db.SQL().QueryRowContext(context.Background(), db.Rebind(`SELECT COUNT(*) FROM readings WHERE device_id = ?`), deviceID).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

// historyRow is one stored reading, the columns a test looks at.
type historyRow struct {
	tenantID, receivedAt int64
	temperature          sql.NullFloat64
	humidity             sql.NullFloat64
	rssi                 sql.NullInt64
	status, extra        sql.NullString
}

func historyAt(tb testing.TB, db *sqldb.DB, deviceID, ts int64) historyRow {
	tb.Helper()
	var h historyRow
	err := db.SQL().QueryRowContext(context.Background(), db.Rebind(`SELECT tenant_id, received_at, temperature, humidity, rssi, status, extra FROM readings WHERE device_id = ? AND ts = ?`), deviceID, ts).
		Scan(&h.tenantID, &h.receivedAt, &h.temperature, &h.humidity, &h.rssi, &h.status, &h.extra)
	if err != nil {
		tb.Fatalf("history of device %d at %d: %v", deviceID, ts, err)
	}
	return h
}

func ms(at int64) *time.Time {
	t := time.UnixMilli(at).UTC()
	return &t
}

func wantLastSeen(tb testing.TB, d *herd.Device, at int64) {
	tb.Helper()
	if d.LastSeen == nil || !d.LastSeen.Equal(time.UnixMilli(at)) {
		tb.Fatalf("device %d last_seen %v, want %v", d.ID, d.LastSeen, time.UnixMilli(at).UTC())
	}
}

// show prints a device's projection with the values behind its pointers.
func show(d *herd.Device) string {
	var b strings.Builder
	fmt.Fprintf(&b, "device %d: status %s online %v firmware %q error_count %d", d.ID, d.Status, d.Online, d.Firmware, d.ErrorCount)
	for _, v := range []struct {
		name string
		p    *float64
	}{{"temperature", d.Temperature}, {"humidity", d.Humidity}, {"pressure", d.Pressure}, {"voltage", d.Voltage}, {"current", d.Current}, {"power", d.Power}, {"battery", d.Battery}} {
		if v.p != nil {
			fmt.Fprintf(&b, " %s %v", v.name, *v.p)
		}
	}
	for _, v := range []struct {
		name string
		p    *int64
	}{{"rssi", d.RSSI}, {"uptime_s", d.UptimeS}} {
		if v.p != nil {
			fmt.Fprintf(&b, " %s %v", v.name, *v.p)
		}
	}
	if d.LastSeen != nil {
		fmt.Fprintf(&b, " last_seen %d", d.LastSeen.UnixMilli())
	}
	return b.String()
}

func eventsOfTypes(evs []*herd.Event, types ...string) []*herd.Event {
	var out []*herd.Event
	for _, e := range evs {
		if slices.Contains(types, e.Type) {
			out = append(out, e)
		}
	}
	return out
}

// wantDeviceEvent fails unless e is an event of type typ about device d,
// in d's tenant and at d's path, whose payload names the device and its key.
func wantDeviceEvent(tb testing.TB, e *herd.Event, typ string, d *herd.Device) {
	tb.Helper()
	if e.Type != typ || e.SubjectType != herd.EventSubjectDevice || e.SubjectID != d.ID || e.TenantID != d.TenantID || e.Path != d.Path {
		tb.Fatalf("got event %s %s %d tenant %d %q, want %s device %d tenant %d %q", e.Type, e.SubjectType, e.SubjectID, e.TenantID, e.Path, typ, d.ID, d.TenantID, d.Path)
	}
	var body map[string]any
	if err := json.Unmarshal(e.Payload, &body); err != nil {
		tb.Fatalf("event %s payload %s: %v", e.Type, e.Payload, err)
	}
	if body["device_id"] != strconv.FormatInt(d.ID, 10) || body["key"] != d.Key {
		tb.Fatalf("event %s payload %s does not name device %d %q", e.Type, e.Payload, d.ID, d.Key)
	}
}

func TestCredentialService(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		creds := sqldb.NewCredentialService(db)
		ten := f.mustTenant(t, "acme")
		site := f.mustNode(t, ten.RootNodeID, "site")
		ctx := context.Background()

		t.Run("OK", func(t *testing.T) {
			d := f.mustDevices(t, site.ID, 1)[0]
			c, err := creds.CreateDeviceCredential(f.super, d.ID)
			mustOK(t, err)
			if !strings.HasPrefix(c.Token, herd.TokenPrefix) || !herd.IsTokenSecret(c.Token) {
				t.Fatalf("token %q", c.Token)
			}
			if c.DeviceID != d.ID || c.TenantID != ten.ID || c.Key != d.Key || c.CreatedAt.IsZero() {
				t.Fatalf("got %+v", c)
			}
			id, err := creds.AuthenticateDevice(ctx, d.Key, c.Token)
			mustOK(t, err)
			if want := (herd.DeviceIdentity{DeviceID: d.ID, TenantID: ten.ID, Key: d.Key}); *id != want {
				t.Fatalf("authenticated %+v, want %+v", *id, want)
			}
		})

		t.Run("ErrUnauthorized", func(t *testing.T) {
			ds := f.mustDevices(t, site.ID, 2)
			c, err := creds.CreateDeviceCredential(f.super, ds[0].ID)
			mustOK(t, err)
			other, err := creds.CreateDeviceCredential(f.super, ds[1].ID)
			mustOK(t, err)
			for _, tt := range []struct{ name, key, token string }{
				{"wrong token", ds[0].Key, sqldb.NewTokenSecret()},
				{"other device's token", ds[0].Key, other.Token},
				{"token with a character changed", ds[0].Key, c.Token[:len(c.Token)-1] + string(c.Token[len(c.Token)-1]^1)},
				{"unknown key", nextKey("nobody"), c.Token},
				{"empty key", "", c.Token},
				{"key of a device without credential", f.mustDevices(t, site.ID, 1)[0].Key, c.Token},
				{"empty token", ds[0].Key, ""},
				{"garbage token", ds[0].Key, "garbage"},
				{"prefix only", ds[0].Key, herd.TokenPrefix},
				{"token without prefix", ds[0].Key, strings.TrimPrefix(c.Token, herd.TokenPrefix)},
				{"key and token swapped", c.Token, ds[0].Key},
			} {
				t.Run(tt.name, func(t *testing.T) {
					id, err := creds.AuthenticateDevice(ctx, tt.key, tt.token)
					wantCode(t, err, herd.EUNAUTHORIZED)
					if id != nil {
						t.Fatalf("got identity %+v with the error", id)
					}
				})
			}
			// The right pair still works.
			_, err = creds.AuthenticateDevice(ctx, ds[0].Key, c.Token)
			mustOK(t, err)
		})

		t.Run("OKNewReplacesOld", func(t *testing.T) {
			d := f.mustDevices(t, site.ID, 1)[0]
			first, err := creds.CreateDeviceCredential(f.super, d.ID)
			mustOK(t, err)
			second, err := creds.CreateDeviceCredential(f.super, d.ID)
			mustOK(t, err)
			if first.Token == second.Token {
				t.Fatal("the same token twice")
			}
			_, err = creds.AuthenticateDevice(ctx, d.Key, first.Token)
			wantCode(t, err, herd.EUNAUTHORIZED)
			id, err := creds.AuthenticateDevice(ctx, d.Key, second.Token)
			mustOK(t, err)
			if id.DeviceID != d.ID {
				t.Fatalf("authenticated device %d, want %d", id.DeviceID, d.ID)
			}
		})

		t.Run("OKDelete", func(t *testing.T) {
			d := f.mustDevices(t, site.ID, 1)[0]
			c, err := creds.CreateDeviceCredential(f.super, d.ID)
			mustOK(t, err)
			mustOK(t, creds.DeleteDeviceCredential(f.super, d.ID))
			_, err = creds.AuthenticateDevice(ctx, d.Key, c.Token)
			wantCode(t, err, herd.EUNAUTHORIZED)
			wantCode(t, creds.DeleteDeviceCredential(f.super, d.ID), herd.ENOTFOUND)
			// A device that never had one.
			wantCode(t, creds.DeleteDeviceCredential(f.super, f.mustDevices(t, site.ID, 1)[0].ID), herd.ENOTFOUND)
		})

		t.Run("ErrUnknownDevice", func(t *testing.T) {
			_, err := creds.CreateDeviceCredential(f.super, 1<<40)
			wantCode(t, err, herd.ENOTFOUND)
			wantCode(t, creds.DeleteDeviceCredential(f.super, 1<<40), herd.ENOTFOUND)
		})

		t.Run("ErrActor", func(t *testing.T) {
			d := f.mustDevices(t, site.ID, 1)[0]
			c, err := creds.CreateDeviceCredential(f.super, d.ID)
			mustOK(t, err)

			viewer, viewerSecret := f.mustUser(t, ten.ID, "viewer")
			f.mustGrant(t, viewer.ID, site.ID, herd.RoleViewer)
			operator, operatorSecret := f.mustUser(t, ten.ID, "operator")
			f.mustGrant(t, operator.ID, site.ID, herd.RoleOperator)
			elsewhere, elsewhereSecret := f.mustUser(t, ten.ID, "elsewhere")
			f.mustGrant(t, elsewhere.ID, f.mustNode(t, ten.RootNodeID, "elsewhere").ID, herd.RoleAdmin)
			otherTen := f.mustTenant(t, "other")
			outsider, outsiderSecret := f.mustUser(t, otherTen.ID, "outsider")
			f.mustGrant(t, outsider.ID, otherTen.RootNodeID, herd.RoleAdmin)

			before := len(f.events(t, ten.ID))
			for _, tt := range []struct {
				name string
				ctx  context.Context
				code string
			}{
				{"viewer", f.as(t, viewerSecret), herd.EFORBIDDEN},
				{"operator", f.as(t, operatorSecret), herd.EFORBIDDEN},
				{"admin of another node", f.as(t, elsewhereSecret), herd.ENOTFOUND},
				{"admin of another tenant", f.as(t, outsiderSecret), herd.ENOTFOUND},
				{"no actor", context.Background(), herd.EUNAUTHORIZED},
			} {
				t.Run(tt.name, func(t *testing.T) {
					got, err := creds.CreateDeviceCredential(tt.ctx, d.ID)
					wantCode(t, err, tt.code)
					if got != nil {
						t.Fatalf("got credential %+v with the error", got)
					}
					wantCode(t, creds.DeleteDeviceCredential(tt.ctx, d.ID), tt.code)
				})
			}
			// Nothing was replaced or revoked, and nothing was written.
			_, err = creds.AuthenticateDevice(ctx, d.Key, c.Token)
			mustOK(t, err)
			if after := len(f.events(t, ten.ID)); after != before {
				t.Fatalf("%d events before, %d after", before, after)
			}

			// An admin of the device's node may.
			admin, adminSecret := f.mustUser(t, ten.ID, "admin")
			f.mustGrant(t, admin.ID, site.ID, herd.RoleAdmin)
			actx := f.as(t, adminSecret)
			c2, err := creds.CreateDeviceCredential(actx, d.ID)
			mustOK(t, err)
			_, err = creds.AuthenticateDevice(ctx, d.Key, c2.Token)
			mustOK(t, err)
			mustOK(t, creds.DeleteDeviceCredential(actx, d.ID))
		})

		t.Run("OKEvents", func(t *testing.T) {
			own := f.mustTenant(t, "events")
			d := f.mustDevices(t, f.mustNode(t, own.RootNodeID, "site").ID, 1)[0]
			before := len(f.events(t, own.ID))
			c1, err := creds.CreateDeviceCredential(f.super, d.ID)
			mustOK(t, err)
			c2, err := creds.CreateDeviceCredential(f.super, d.ID)
			mustOK(t, err)
			mustOK(t, creds.DeleteDeviceCredential(f.super, d.ID))
			wantCode(t, creds.DeleteDeviceCredential(f.super, d.ID), herd.ENOTFOUND)

			evs := f.events(t, own.ID)
			checkSeq(t, evs)
			evs = evs[before:]
			want := []string{herd.EventDeviceCredentialCreated, herd.EventDeviceCredentialCreated, herd.EventDeviceCredentialDeleted}
			if len(evs) != len(want) {
				t.Fatalf("%d new events, want %d", len(evs), len(want))
			}
			for i, e := range evs {
				wantDeviceEvent(t, e, want[i], d)
				for _, tok := range []string{c1.Token, c2.Token} {
					if strings.Contains(string(e.Payload), strings.TrimPrefix(tok, herd.TokenPrefix)) {
						t.Fatalf("event %s carries the token", e.Type)
					}
				}
			}
		})

		t.Run("OKDeviceDeleted", func(t *testing.T) {
			d := f.mustDevices(t, site.ID, 1)[0]
			c, err := creds.CreateDeviceCredential(f.super, d.ID)
			mustOK(t, err)
			mustOK(t, f.Devices.DeleteDevice(f.super, d.ID))
			_, err = creds.AuthenticateDevice(ctx, d.Key, c.Token)
			wantCode(t, err, herd.EUNAUTHORIZED)
			var n int
			mustOK(t, db.SQL().QueryRowContext(ctx, db.Rebind(`SELECT COUNT(*) FROM device_credentials WHERE device_id = ?`), d.ID).Scan(&n))
			if n != 0 {
				t.Fatalf("%d credentials of the deleted device remain", n)
			}
			// A new device with the old key does not inherit the old token.
			again := &herd.Device{NodeID: site.ID, Key: d.Key}
			mustOK(t, f.Devices.CreateDevices(f.super, []*herd.Device{again}))
			_, err = creds.AuthenticateDevice(ctx, d.Key, c.Token)
			wantCode(t, err, herd.EUNAUTHORIZED)
		})
	})
}

func TestIngestService_Readings(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		site := f.mustNode(t, ten.RootNodeID, "site")

		t.Run("OKEachField", func(t *testing.T) {
			// Each field alone: it and last_seen change, nothing else does.
			for _, tt := range []struct {
				name string
				r    herd.Reading
				want func(d *herd.Device)
			}{
				{"temperature", herd.Reading{Has: herd.ReadingTemperature, Temperature: -12.5}, func(d *herd.Device) { d.Temperature = new(-12.5) }},
				{"humidity", herd.Reading{Has: herd.ReadingHumidity, Humidity: 55.25}, func(d *herd.Device) { d.Humidity = new(55.25) }},
				{"pressure", herd.Reading{Has: herd.ReadingPressure, Pressure: 1013.5}, func(d *herd.Device) { d.Pressure = new(1013.5) }},
				{"voltage", herd.Reading{Has: herd.ReadingVoltage, Voltage: 229.75}, func(d *herd.Device) { d.Voltage = new(229.75) }},
				{"current", herd.Reading{Has: herd.ReadingCurrent, Current: -1.5}, func(d *herd.Device) { d.Current = new(-1.5) }},
				{"power", herd.Reading{Has: herd.ReadingPower, Power: 0}, func(d *herd.Device) { d.Power = new(0.0) }},
				{"battery", herd.Reading{Has: herd.ReadingBattery, Battery: 87.5}, func(d *herd.Device) { d.Battery = new(87.5) }},
				{"rssi", herd.Reading{Has: herd.ReadingRSSI, RSSI: -71}, func(d *herd.Device) { d.RSSI = new(int64(-71)) }},
				{"uptime_s", herd.Reading{Has: herd.ReadingUptimeS, UptimeS: 1 << 40}, func(d *herd.Device) { d.UptimeS = new(int64(1 << 40)) }},
				{"error_count", herd.Reading{Has: herd.ReadingErrorCount, ErrorCount: 7}, func(d *herd.Device) { d.ErrorCount = 7 }},
				{"status", herd.Reading{Has: herd.ReadingStatus, Status: herd.StatusAlarm}, func(d *herd.Device) { d.Status = herd.StatusAlarm }},
				{"firmware", herd.Reading{Has: herd.ReadingFirmware, Firmware: "2.0.1"}, func(d *herd.Device) { d.Firmware = "2.0.1" }},
				// Fields the device did not mark as sent are not written, whatever they hold.
				{"unmarked", herd.Reading{Temperature: 99, Status: herd.StatusWarn, Firmware: "x", ErrorCount: 5}, func(*herd.Device) {}},
				{"heartbeat", herd.Reading{}, func(*herd.Device) {}},
			} {
				t.Run(tt.name, func(t *testing.T) {
					d := f.mustDevices(t, site.ID, 1)[0]
					want := f.mustFind(t, d.ID)
					r := tt.r
					r.TS = at0 - 500
					mustIngest(t, db, readingItem(d, at0, r))
					tt.want(want)
					want.LastSeen = ms(at0)
					if got := f.mustFind(t, d.ID); !reflect.DeepEqual(got, want) {
						t.Fatalf("got  %s\nwant %s", show(got), show(want))
					}
					if n := historyCount(t, db, d.ID); n != 1 {
						t.Fatalf("%d history rows, want 1", n)
					}
				})
			}
		})

		t.Run("OKKeepsFieldsNotSent", func(t *testing.T) {
			d := f.mustDevices(t, site.ID, 1)[0]
			extra := []byte(`{"door":"open","x":1}`)
			mustIngest(t, db, readingItem(d, at0, herd.Reading{
				TS: at0 - 100, Has: herd.ReadingTemperature | herd.ReadingRSSI | herd.ReadingStatus | herd.ReadingFirmware,
				Temperature: 21.5, RSSI: -60, Status: herd.StatusWarn, Firmware: "1.0", Extra: extra,
			}))
			got := f.mustFind(t, d.ID)
			if *got.Temperature != 21.5 || *got.RSSI != -60 || got.Status != herd.StatusWarn || got.Firmware != "1.0" || got.Humidity != nil {
				t.Fatalf("after the first reading: %s", show(got))
			}
			wantLastSeen(t, got, at0)

			mustIngest(t, db, readingItem(d, at0+1000, herd.Reading{TS: at0 + 900, Has: herd.ReadingHumidity, Humidity: 40}))
			got = f.mustFind(t, d.ID)
			if got.Humidity == nil || *got.Humidity != 40 {
				t.Fatalf("humidity %v, want 40", got.Humidity)
			}
			if *got.Temperature != 21.5 || *got.RSSI != -60 || got.Status != herd.StatusWarn || got.Firmware != "1.0" {
				t.Fatalf("fields not sent changed: %s", show(got))
			}
			wantLastSeen(t, got, at0+1000)

			// One history row per reading, with what each carried.
			if n := historyCount(t, db, d.ID); n != 2 {
				t.Fatalf("%d history rows, want 2", n)
			}
			h := historyAt(t, db, d.ID, at0-100)
			if h.tenantID != ten.ID || h.receivedAt != at0 || h.temperature != (sql.NullFloat64{Float64: 21.5, Valid: true}) ||
				h.rssi != (sql.NullInt64{Int64: -60, Valid: true}) || h.status != (sql.NullString{String: herd.StatusWarn, Valid: true}) ||
				h.humidity.Valid || h.extra != (sql.NullString{String: string(extra), Valid: true}) {
				t.Fatalf("first history row %+v", h)
			}
			h = historyAt(t, db, d.ID, at0+900)
			if h.receivedAt != at0+1000 || h.humidity != (sql.NullFloat64{Float64: 40, Valid: true}) || h.temperature.Valid || h.rssi.Valid || h.status.Valid || h.extra.Valid {
				t.Fatalf("second history row %+v", h)
			}
		})

		t.Run("OKRetryStoredOnce", func(t *testing.T) {
			d := f.mustDevices(t, site.ID, 1)[0]
			r := herd.Reading{TS: at0, Has: herd.ReadingTemperature, Temperature: 20}
			mustIngest(t, db, readingItem(d, at0+10, r))
			// The PUBACK was lost: the device sends the same reading again,
			// in a later batch and twice in one batch.
			mustIngest(t, db, readingItem(d, at0+20, r))
			mustIngest(t, db, readingItem(d, at0+30, r), readingItem(d, at0+31, r))
			if n := historyCount(t, db, d.ID); n != 1 {
				t.Fatalf("%d history rows, want 1", n)
			}
			if h := historyAt(t, db, d.ID, at0); h.receivedAt != at0+10 {
				t.Fatalf("history row received at %d, want the first arrival %d", h.receivedAt, at0+10)
			}
			got := f.mustFind(t, d.ID)
			if *got.Temperature != 20 {
				t.Fatalf("temperature %v", *got.Temperature)
			}
			wantLastSeen(t, got, at0+31)
		})

		t.Run("OKOlderReading", func(t *testing.T) {
			d := f.mustDevices(t, site.ID, 1)[0]
			mustIngest(t, db, readingItem(d, at0, herd.Reading{TS: at0, Has: herd.ReadingTemperature | herd.ReadingStatus, Temperature: 20, Status: herd.StatusOK}))
			// A backlog: older readings arriving later.
			mustIngest(t, db, readingItem(d, at0+5000, herd.Reading{TS: at0 - 1000, Has: herd.ReadingTemperature | herd.ReadingHumidity | herd.ReadingStatus, Temperature: 99, Humidity: 10, Status: herd.StatusAlarm}))
			got := f.mustFind(t, d.ID)
			if *got.Temperature != 20 || got.Humidity != nil || got.Status != herd.StatusOK {
				t.Fatalf("an older reading changed the projection: %s", show(got))
			}
			wantLastSeen(t, got, at0+5000)
			if n := historyCount(t, db, d.ID); n != 2 {
				t.Fatalf("%d history rows, want 2", n)
			}
			if h := historyAt(t, db, d.ID, at0-1000); h.temperature.Float64 != 99 {
				t.Fatalf("older history row %+v", h)
			}
			// last_seen never goes back: an arrival before the last one
			// (another gateway's batch committing late) leaves it.
			mustIngest(t, db, readingItem(d, at0+4000, herd.Reading{TS: at0 - 2000}))
			wantLastSeen(t, f.mustFind(t, d.ID), at0+5000)
			// Nor a connect whose arrival comes before it.
			mustIngest(t, db, connectItem(d, at0+4500))
			wantLastSeen(t, f.mustFind(t, d.ID), at0+5000)
			// A reading of the projection's ts is that reading sent again:
			// the history keeps the first, and so does the projection.
			mustIngest(t, db, readingItem(d, at0+6000, herd.Reading{TS: at0, Has: herd.ReadingHumidity, Humidity: 30}))
			if got := f.mustFind(t, d.ID); got.Humidity != nil || *got.Temperature != 20 {
				t.Fatalf("a reading of the projection's ts: %s", show(got))
			}
		})

		t.Run("OKRepeatInOneBatch", func(t *testing.T) {
			// The same time twice in one batch, with other values: the
			// history and the projection both keep the first.
			d := f.mustDevices(t, site.ID, 1)[0]
			mustIngest(t, db,
				readingItem(d, at0, herd.Reading{TS: at0, Has: herd.ReadingTemperature, Temperature: 1}),
				readingItem(d, at0+1, herd.Reading{TS: at0, Has: herd.ReadingTemperature | herd.ReadingHumidity, Temperature: 2, Humidity: 40}),
			)
			if h := historyAt(t, db, d.ID, at0); h.temperature.Float64 != 1 {
				t.Fatalf("history %+v, want the first reading", h)
			}
			if got := f.mustFind(t, d.ID); got.Temperature == nil || *got.Temperature != 1 || got.Humidity != nil {
				t.Fatalf("projection %s, want the first reading", show(got))
			}
			wantLastSeen(t, f.mustFind(t, d.ID), at0+1)
		})

		t.Run("OKRepeatAfterAnEarlierTime", func(t *testing.T) {
			// A repeat that follows an older reading is still a repeat.
			d := f.mustDevices(t, site.ID, 1)[0]
			mustIngest(t, db,
				readingItem(d, at0, herd.Reading{TS: at0 + 10, Has: herd.ReadingTemperature, Temperature: 1}),
				readingItem(d, at0+1, herd.Reading{TS: at0 + 5, Has: herd.ReadingTemperature, Temperature: 5}),
				readingItem(d, at0+2, herd.Reading{TS: at0 + 10, Has: herd.ReadingTemperature, Temperature: 2}),
			)
			if h := historyAt(t, db, d.ID, at0+10); h.temperature.Float64 != 1 {
				t.Fatalf("history %+v, want the first reading", h)
			}
			if got := f.mustFind(t, d.ID); got.Temperature == nil || *got.Temperature != 1 {
				t.Fatalf("projection %s, want the first reading", show(got))
			}
		})

		t.Run("OKFold", func(t *testing.T) {
			ds := f.mustDevices(t, site.ID, 2)
			a, b := ds[0], ds[1]
			// a's readings arrive out of ts order, interleaved with b's.
			mustIngest(t, db,
				readingItem(a, at0+1, herd.Reading{TS: at0 + 10, Has: herd.ReadingTemperature | herd.ReadingHumidity | herd.ReadingStatus, Temperature: 1, Humidity: 1, Status: herd.StatusAlarm}),
				readingItem(b, at0+2, herd.Reading{TS: at0 + 50, Has: herd.ReadingTemperature, Temperature: 50}),
				readingItem(a, at0+3, herd.Reading{TS: at0 + 30, Has: herd.ReadingTemperature | herd.ReadingRSSI, Temperature: 3, RSSI: -3}),
				readingItem(a, at0+4, herd.Reading{TS: at0 + 20, Has: herd.ReadingHumidity | herd.ReadingPressure | herd.ReadingRSSI | herd.ReadingStatus, Humidity: 2, Pressure: 2, RSSI: -2, Status: herd.StatusWarn}),
				readingItem(b, at0+5, herd.Reading{TS: at0 + 40, Has: herd.ReadingTemperature | herd.ReadingVoltage, Temperature: 40, Voltage: 40}),
				readingItem(a, at0+6, herd.Reading{TS: at0 + 5, Has: herd.ReadingTemperature | herd.ReadingBattery, Temperature: 0.5, Battery: 0.5}),
			)
			got := f.mustFind(t, a.ID)
			if *got.Temperature != 3 || *got.Humidity != 2 || *got.Pressure != 2 || *got.RSSI != -3 || *got.Battery != 0.5 || got.Status != herd.StatusWarn || got.Voltage != nil {
				t.Fatalf("device a: %s", show(got))
			}
			wantLastSeen(t, got, at0+6)
			got = f.mustFind(t, b.ID)
			if *got.Temperature != 50 || *got.Voltage != 40 || got.Humidity != nil {
				t.Fatalf("device b: %s", show(got))
			}
			wantLastSeen(t, got, at0+5)
			if n, m := historyCount(t, db, a.ID), historyCount(t, db, b.ID); n != 4 || m != 2 {
				t.Fatalf("history rows: a %d, b %d; want 4 and 2", n, m)
			}
		})

		t.Run("OKFoldWithOlderThanProjection", func(t *testing.T) {
			// A batch holding a reading older than the projection's and one
			// newer: the older one's values stay out of the projection, as
			// they do when the two arrive in separate batches.
			for _, batched := range []bool{false, true} {
				t.Run(map[bool]string{false: "separate", true: "one batch"}[batched], func(t *testing.T) {
					d := f.mustDevices(t, site.ID, 1)[0]
					mustIngest(t, db, readingItem(d, at0, herd.Reading{TS: at0, Has: herd.ReadingTemperature | herd.ReadingHumidity | herd.ReadingStatus, Temperature: 20, Humidity: 50, Status: herd.StatusOK}))
					older := readingItem(d, at0+100, herd.Reading{TS: at0 - 50, Has: herd.ReadingTemperature | herd.ReadingStatus, Temperature: 99, Status: herd.StatusAlarm})
					newer := readingItem(d, at0+200, herd.Reading{TS: at0 + 50, Has: herd.ReadingHumidity, Humidity: 60})
					if batched {
						mustIngest(t, db, older, newer)
					} else {
						mustIngest(t, db, older)
						mustIngest(t, db, newer)
					}
					got := f.mustFind(t, d.ID)
					if *got.Temperature != 20 || got.Status != herd.StatusOK || *got.Humidity != 60 {
						t.Fatalf("temperature %v status %s humidity %v, want 20 ok 60", *got.Temperature, got.Status, *got.Humidity)
					}
					wantLastSeen(t, got, at0+200)
					if n := historyCount(t, db, d.ID); n != 3 {
						t.Fatalf("%d history rows, want 3", n)
					}
				})
			}
		})

		t.Run("OKDeletedDeviceSkipped", func(t *testing.T) {
			ds := f.mustDevices(t, site.ID, 2)
			gone, live := ds[0], ds[1]
			mustOK(t, f.Devices.DeleteDevice(f.super, gone.ID))
			before := len(f.events(t, ten.ID))
			mustIngest(t, db,
				connectItem(gone, at0), readingItem(gone, at0+1, herd.Reading{TS: at0, Has: herd.ReadingTemperature, Temperature: 1}), disconnectItem(gone, at0+2),
				readingItem(live, at0+3, herd.Reading{TS: at0, Has: herd.ReadingTemperature, Temperature: 2}),
			)
			if got := f.mustFind(t, live.ID); *got.Temperature != 2 {
				t.Fatalf("live device: %s", show(got))
			}
			_, err := f.Devices.FindDeviceByID(f.super, gone.ID)
			wantCode(t, err, herd.ENOTFOUND)
			if after := len(f.events(t, ten.ID)); after != before {
				t.Fatalf("%d events before, %d after", before, after)
			}
		})
	})
}

func TestIngestService_Connections(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		site := f.mustNode(t, ten.RootNodeID, "site")
		// newEvents returns the tenant's connection events after the first n
		// events.
		newEvents := func(t *testing.T, n int) []*herd.Event {
			t.Helper()
			evs := f.events(t, ten.ID)
			checkSeq(t, evs)
			return eventsOfTypes(evs[n:], herd.EventDeviceOnline, herd.EventDeviceOffline)
		}

		t.Run("OKConnectDisconnect", func(t *testing.T) {
			d := f.mustDevices(t, site.ID, 1)[0]
			if got := f.mustFind(t, d.ID); got.Online || got.Status != "" {
				t.Fatalf("new device %+v", got)
			}
			n := len(f.events(t, ten.ID))

			mustIngest(t, db, connectItem(d, at0))
			got := f.mustFind(t, d.ID)
			// Connecting says nothing of the device's health: its status
			// stays empty until it reports one.
			if !got.Online || got.Status != "" {
				t.Fatalf("after connect: online %v status %s", got.Online, got.Status)
			}
			wantLastSeen(t, got, at0)
			evs := newEvents(t, n)
			if len(evs) != 1 {
				t.Fatalf("%d events after connect, want 1", len(evs))
			}
			wantDeviceEvent(t, evs[0], herd.EventDeviceOnline, d)

			// A takeover: the device connects again while online.
			mustIngest(t, db, connectItem(d, at0+100))
			got = f.mustFind(t, d.ID)
			if !got.Online || got.Status != "" {
				t.Fatalf("after takeover: online %v status %s", got.Online, got.Status)
			}
			wantLastSeen(t, got, at0+100)
			if evs := newEvents(t, n); len(evs) != 1 {
				t.Fatalf("%d events after takeover, want 1", len(evs))
			}

			mustIngest(t, db, disconnectItem(d, at0+200))
			got = f.mustFind(t, d.ID)
			if got.Online || got.Status != "" {
				t.Fatalf("after disconnect: online %v status %s", got.Online, got.Status)
			}
			evs = newEvents(t, n)
			if len(evs) != 2 {
				t.Fatalf("%d events after disconnect, want 2", len(evs))
			}
			wantDeviceEvent(t, evs[1], herd.EventDeviceOffline, d)

			// Disconnecting an offline device changes nothing.
			mustIngest(t, db, disconnectItem(d, at0+300))
			if got := f.mustFind(t, d.ID); got.Online || got.Status != "" {
				t.Fatalf("after second disconnect: online %v status %s", got.Online, got.Status)
			}
			if evs := newEvents(t, n); len(evs) != 2 {
				t.Fatalf("%d events after second disconnect, want 2", len(evs))
			}
		})

		t.Run("OKConnectKeepsReadingStatus", func(t *testing.T) {
			// A connect leaves the status a reading set.
			d := f.mustDevices(t, site.ID, 1)[0]
			mustIngest(t, db, readingItem(d, at0, herd.Reading{TS: at0, Has: herd.ReadingStatus, Status: herd.StatusAlarm}), connectItem(d, at0+1))
			if got := f.mustFind(t, d.ID); !got.Online || got.Status != herd.StatusAlarm {
				t.Fatalf("online %v status %s, want true alarm", got.Online, got.Status)
			}
		})

		t.Run("OKOrderInBatch", func(t *testing.T) {
			for _, tt := range []struct {
				name       string
				items      func(d *herd.Device) []herd.IngestItem
				online     bool
				status     string
				temp       float64
				wantEvents []string
			}{
				{
					name: "reading then disconnect",
					items: func(d *herd.Device) []herd.IngestItem {
						return []herd.IngestItem{
							readingItem(d, at0+10, herd.Reading{TS: at0 + 10, Has: herd.ReadingStatus | herd.ReadingTemperature, Status: herd.StatusAlarm, Temperature: 7}),
							disconnectItem(d, at0+11),
						}
					},
					online: false, status: herd.StatusAlarm, temp: 7,
					wantEvents: []string{herd.EventDeviceOffline},
				},
				{
					name: "disconnect, connect, reading",
					items: func(d *herd.Device) []herd.IngestItem {
						return []herd.IngestItem{
							disconnectItem(d, at0+10),
							connectItem(d, at0+11),
							readingItem(d, at0+12, herd.Reading{TS: at0 + 12, Has: herd.ReadingStatus | herd.ReadingTemperature, Status: herd.StatusWarn, Temperature: 8}),
						}
					},
					online: true, status: herd.StatusWarn, temp: 8,
					wantEvents: []string{herd.EventDeviceOffline, herd.EventDeviceOnline},
				},
				{
					name: "reading, disconnect, connect",
					items: func(d *herd.Device) []herd.IngestItem {
						return []herd.IngestItem{
							readingItem(d, at0+10, herd.Reading{TS: at0 + 10, Has: herd.ReadingStatus | herd.ReadingTemperature, Status: herd.StatusAlarm, Temperature: 9}),
							disconnectItem(d, at0+11),
							connectItem(d, at0+12),
						}
					},
					online: true, status: herd.StatusAlarm, temp: 9,
					wantEvents: []string{herd.EventDeviceOffline, herd.EventDeviceOnline},
				},
			} {
				t.Run(tt.name, func(t *testing.T) {
					d := f.mustDevices(t, site.ID, 1)[0]
					mustIngest(t, db, connectItem(d, at0))
					n := len(f.events(t, ten.ID))

					// Another device's items around them change nothing of d's.
					other := f.mustDevices(t, site.ID, 1)[0]
					n++ // its device.created
					items := append([]herd.IngestItem{readingItem(other, at0+10, herd.Reading{TS: at0 + 10, Has: herd.ReadingStatus, Status: herd.StatusOK})}, tt.items(d)...)
					mustIngest(t, db, items...)

					got := f.mustFind(t, d.ID)
					if got.Online != tt.online || got.Status != tt.status || got.Temperature == nil || *got.Temperature != tt.temp {
						t.Fatalf("online %v status %s temperature %v, want %v %s %v", got.Online, got.Status, got.Temperature, tt.online, tt.status, tt.temp)
					}
					all := f.events(t, ten.ID)
					checkSeq(t, all)
					evs := all[n:]
					if len(evs) != len(tt.wantEvents) {
						t.Fatalf("%d events, want %d", len(evs), len(tt.wantEvents))
					}
					for i, e := range evs {
						wantDeviceEvent(t, e, tt.wantEvents[i], d)
						if e.Seq != int64(n+i+1) {
							t.Fatalf("event %d has seq %d, want %d", i, e.Seq, n+i+1)
						}
					}
				})
			}
		})

		t.Run("ErrUnknownKindStoresNothing", func(t *testing.T) {
			own := f.mustTenant(t, "atomic")
			own2 := f.mustTenant(t, "atomic2")
			ds := f.mustDevices(t, f.mustNode(t, own.RootNodeID, "site").ID, 3)
			on := ds[2]
			mustIngest(t, db, connectItem(on, at0))
			far := f.mustDevices(t, own2.RootNodeID, 1)[0]
			for _, tt := range []struct {
				name string
				kind herd.IngestKind
				at   int // where the bad item goes
			}{
				{"zero kind first", 0, 0},
				{"unknown kind in the middle", 99, 2},
				{"unknown kind last", herd.IngestOTAProgress + 1, 5},
			} {
				t.Run(tt.name, func(t *testing.T) {
					before, before2 := f.state(t, own.ID), f.state(t, own2.ID)
					items := []herd.IngestItem{
						readingItem(ds[0], at0+10, herd.Reading{TS: at0 + 10, Has: herd.ReadingTemperature | herd.ReadingStatus, Temperature: 30, Status: herd.StatusAlarm}),
						connectItem(ds[1], at0+11),
						disconnectItem(on, at0+12),
						readingItem(on, at0+13, herd.Reading{TS: at0 + 13, Has: herd.ReadingHumidity, Humidity: 3}),
						connectItem(far, at0+14),
					}
					bad := herd.IngestItem{Kind: tt.kind, DeviceID: ds[1].ID, TenantID: own.ID, At: at0 + 15, Reading: herd.Reading{TS: at0 + 15, Has: herd.ReadingTemperature, Temperature: 1}}
					items = slices.Insert(items, tt.at, bad)
					if err := sqldb.NewIngestService(db).Ingest(context.Background(), items); err == nil {
						t.Fatal("ingest of an unknown kind succeeded")
					}
					f.wantUnchanged(t, own.ID, before)
					f.wantUnchanged(t, own2.ID, before2)
					for _, d := range append(ds, far) {
						if n := historyCount(t, db, d.ID); n != 0 {
							t.Fatalf("device %d: %d history rows", d.ID, n)
						}
					}
				})
			}
		})

		// A reboot storm's worth of connection changes in one batch, more
		// devices than one statement holds: each device gets its events in
		// order, and its state follows its last change.
		t.Run("OKManyDevicesOneBatch", func(t *testing.T) {
			ds := f.mustDevices(t, site.ID, 600)
			n := len(f.events(t, ten.ID))
			var items []herd.IngestItem
			for i, d := range ds {
				items = append(items, connectItem(d, at0+int64(i)))
			}
			// The first half goes again and comes back (a takeover for none:
			// each disconnects first); the second half leaves for good.
			for i, d := range ds {
				items = append(items, disconnectItem(d, at0+1000+int64(i)))
				if i < 300 {
					items = append(items, readingItem(d, at0+1500+int64(i), herd.Reading{TS: at0 + 1500 + int64(i), Has: herd.ReadingStatus, Status: herd.StatusWarn}))
					items = append(items, connectItem(d, at0+2000+int64(i)))
				}
			}
			mustIngest(t, db, items...)
			evs := newEvents(t, n)
			per := map[int64][]string{}
			for _, e := range evs {
				per[e.SubjectID] = append(per[e.SubjectID], e.Type)
			}
			for i, d := range ds {
				want := []string{herd.EventDeviceOnline, herd.EventDeviceOffline}
				if i < 300 {
					want = append(want, herd.EventDeviceOnline)
				}
				if !slices.Equal(per[d.ID], want) {
					t.Fatalf("device %d: events %v, want %v", i, per[d.ID], want)
				}
				got := f.mustFind(t, d.ID)
				if i < 300 {
					// Back online, with the warn it reported while away.
					if !got.Online || got.Status != herd.StatusWarn {
						t.Fatalf("device %d: online %v status %s, want online warn", i, got.Online, got.Status)
					}
					wantLastSeen(t, got, at0+2000+int64(i))
				} else if got.Online || got.Status != "" {
					t.Fatalf("device %d: online %v status %q, want offline with no status reported", i, got.Online, got.Status)
				}
			}
		})

		t.Run("OKTenantsOwnOutboxes", func(t *testing.T) {
			tA, tB := f.mustTenant(t, "a"), f.mustTenant(t, "b")
			a := f.mustDevices(t, tA.RootNodeID, 1)[0]
			b := f.mustDevices(t, tB.RootNodeID, 2)
			na, nb := len(f.events(t, tA.ID)), len(f.events(t, tB.ID))
			mustIngest(t, db, connectItem(b[1], at0), connectItem(a, at0+1), connectItem(b[0], at0+2), disconnectItem(a, at0+3))
			for _, tt := range []struct {
				tenant *herd.Tenant
				before int
				want   []string
				dev    []*herd.Device
			}{
				{tA, na, []string{herd.EventDeviceOnline, herd.EventDeviceOffline}, []*herd.Device{a, a}},
				{tB, nb, []string{herd.EventDeviceOnline, herd.EventDeviceOnline}, []*herd.Device{b[0], b[1]}}, // by device id
			} {
				evs := f.events(t, tt.tenant.ID)
				checkSeq(t, evs)
				evs = evs[tt.before:]
				if len(evs) != len(tt.want) {
					t.Fatalf("tenant %s: %d new events, want %d", tt.tenant.Name, len(evs), len(tt.want))
				}
				for i, e := range evs {
					wantDeviceEvent(t, e, tt.want[i], tt.dev[i])
				}
			}
		})
	})
}

// TestIngestService_StateCache checks that a query answered from the state
// cache sees what was ingested after the cache was loaded.
func TestIngestService_StateCache(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		db.StateCache = sqldb.StateCacheConfig{MinTenantDevices: 1, Always: true, Refresh: time.Hour}
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		ds := f.mustDevices(t, f.mustNode(t, ten.RootNodeID, "site").ID, 3)

		var mu sync.Mutex
		cached := 0
		db.QueryHook = func(query string, _ []any) {
			if strings.Contains(query, "FROM devices WHERE") && strings.Contains(query, " AND id IN (") {
				mu.Lock()
				cached++
				mu.Unlock()
			}
		}
		t.Cleanup(func() { db.QueryHook = nil })
		hot := func(t *testing.T) ([]int64, int64) {
			t.Helper()
			mu.Lock()
			cached = 0
			mu.Unlock()
			p, err := f.Devices.QueryDevices(f.super, herd.DeviceQuery{
				TenantID: ten.ID,
				Filters:  []herd.DeviceFilter{{Field: "temperature", Op: herd.OpGt, Values: []any{30.0}}},
				Sort:     herd.DeviceSort{Field: "name"},
			})
			mustOK(t, err)
			mu.Lock()
			defer mu.Unlock()
			if p.Count > 0 && cached == 0 {
				t.Fatal("the query was not answered from the state cache")
			}
			return ids(p.Items), p.Count
		}

		if got, n := hot(t); len(got) != 0 || n != 0 {
			t.Fatalf("before: %v, count %d", got, n)
		}
		mustIngest(t, db, readingItem(ds[1], at0, herd.Reading{TS: at0, Has: herd.ReadingTemperature, Temperature: 35}),
			readingItem(ds[2], at0, herd.Reading{TS: at0, Has: herd.ReadingTemperature, Temperature: 30}))
		if got, n := hot(t); !slices.Equal(got, []int64{ds[1].ID}) || n != 1 {
			t.Fatalf("after: %v, count %d, want [%d] and 1", got, n, ds[1].ID)
		}
		// And a later reading taking it back below.
		mustIngest(t, db, readingItem(ds[1], at0+1, herd.Reading{TS: at0 + 1, Has: herd.ReadingTemperature, Temperature: 25}))
		if got, n := hot(t); len(got) != 0 || n != 0 {
			t.Fatalf("after cooling: %v, count %d", got, n)
		}
	})
}

// TestCredentialService_Batch checks the provisioning path: credentials for
// many devices in one transaction, all or none.
func TestCredentialService_Batch(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		creds := sqldb.NewCredentialService(db)
		ten := f.mustTenant(t, "acme")
		site := f.mustNode(t, ten.RootNodeID, "site")
		other := f.mustNode(t, ten.RootNodeID, "other")
		ds := f.mustDevices(t, site.ID, 3)
		outside := f.mustDevices(t, other.ID, 1)[0]

		u, secret := f.mustUser(t, ten.ID, "site admin")
		f.mustGrant(t, u.ID, site.ID, herd.RoleAdmin)
		// One device outside the caller's grants refuses the whole batch.
		_, err := creds.CreateDeviceCredentials(f.as(t, secret), append(ids(ds), outside.ID))
		wantCode(t, err, herd.ENOTFOUND)
		var n int
		mustOK(t, db.SQL().QueryRowContext(t.Context(), `SELECT COUNT(*) FROM device_credentials`).Scan(&n))
		if n != 0 {
			t.Fatalf("a refused batch left %d credentials", n)
		}
		// A device twice would get a token its second one replaces.
		_, err = creds.CreateDeviceCredentials(f.as(t, secret), []int64{ds[0].ID, ds[1].ID, ds[0].ID})
		wantCode(t, err, herd.EINVALID)
		got, err := creds.CreateDeviceCredentials(f.as(t, secret), ids(ds))
		mustOK(t, err)
		if len(got) != len(ds) {
			t.Fatalf("%d credentials for %d devices", len(got), len(ds))
		}
		for i, c := range got {
			id, err := creds.AuthenticateDevice(t.Context(), ds[i].Key, c.Token)
			mustOK(t, err)
			if id.DeviceID != ds[i].ID || c.Key != ds[i].Key {
				t.Fatalf("credential %d: %+v for device %+v", i, id, ds[i])
			}
		}
		_, err = creds.CreateDeviceCredentials(f.super, make([]int64, herd.MaxBatchDevices+1))
		wantCode(t, err, herd.EINVALID)
	})
}

func reportItem(d *herd.Device, at int64, data string) herd.IngestItem {
	return herd.IngestItem{Kind: herd.IngestEvent, DeviceID: d.ID, TenantID: d.TenantID, At: at, Data: []byte(data)}
}

// TestIngestService_Reports checks that events devices report become
// device.reported events in the outbox, in order with connection changes,
// carrying the device's object, and move last_seen.
func TestIngestService_Reports(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		site := f.mustNode(t, ten.RootNodeID, "site")
		ds := f.mustDevices(t, site.ID, 2)
		d, gone := ds[0], ds[1]
		mustOK(t, f.Devices.DeleteDevice(f.super, gone.ID))
		n := len(f.events(t, ten.ID))
		mustIngest(t, db,
			connectItem(d, at0),
			reportItem(d, at0+1, `{"kind":"door","open":true}`),
			reportItem(gone, at0+1, `{"kind":"ghost"}`),
			reportItem(d, at0+2, `{"kind":"door","open":false}`),
			disconnectItem(d, at0+3),
			reportItem(d, at0+4, `{"kind":"late"}`),
		)
		evs := f.events(t, ten.ID)
		checkSeq(t, evs)
		evs = eventsOfTypes(evs[n:], herd.EventDeviceOnline, herd.EventDeviceOffline, herd.EventDeviceReported)
		want := []struct{ typ, data string }{
			{herd.EventDeviceOnline, ""},
			{herd.EventDeviceReported, `{"kind":"door","open":true}`},
			{herd.EventDeviceReported, `{"kind":"door","open":false}`},
			{herd.EventDeviceOffline, ""},
			{herd.EventDeviceReported, `{"kind":"late"}`},
		}
		if len(evs) != len(want) {
			t.Fatalf("%d events, want %d: %+v", len(evs), len(want), evs)
		}
		for i, w := range want {
			wantDeviceEvent(t, evs[i], w.typ, d)
			if w.data == "" {
				continue
			}
			var body struct {
				Data json.RawMessage `json:"data"`
				Key  string          `json:"key"`
			}
			mustOK(t, json.Unmarshal(evs[i].Payload, &body))
			if string(body.Data) != w.data || body.Key != d.Key {
				t.Errorf("event %d: data %s key %q, want %s %q", i, body.Data, body.Key, w.data, d.Key)
			}
		}
		wantLastSeen(t, f.mustFind(t, d.ID), at0+4)
	})
}
