package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/herd-iot/herd"
)

// DeviceService implements herd.DeviceService.
type DeviceService struct{ db *DB }

var _ herd.DeviceService = (*DeviceService)(nil)

// NewDeviceService returns a DeviceService on db.
func NewDeviceService(db *DB) *DeviceService { return &DeviceService{db: db} }

// deviceColumns is the projection every device read selects, in the order
// scanDevice expects.
const deviceColumns = `id, tenant_id, node_id, path, key, name, model, firmware, status, online, last_seen,
temperature, humidity, pressure, voltage, current, power, battery, rssi, uptime_s, error_count, config_version, created_at, version`

type rowScanner interface{ Scan(dest ...any) error }

func scanDevice(r rowScanner) (*herd.Device, error) {
	var d herd.Device
	var lastSeen, rssi, uptime sql.NullInt64
	var temp, hum, pres, volt, cur, pow, bat sql.NullFloat64
	var created int64
	if err := r.Scan(&d.ID, &d.TenantID, &d.NodeID, &d.Path, &d.Key, &d.Name, &d.Model, &d.Firmware, &d.Status, &d.Online, &lastSeen,
		&temp, &hum, &pres, &volt, &cur, &pow, &bat, &rssi, &uptime, &d.ErrorCount, &d.ConfigVersion, &created, &d.Version); err != nil {
		return nil, err
	}
	if lastSeen.Valid {
		t := msToTime(lastSeen.Int64)
		d.LastSeen = &t
	}
	for _, p := range []struct {
		src sql.NullFloat64
		dst **float64
	}{{temp, &d.Temperature}, {hum, &d.Humidity}, {pres, &d.Pressure}, {volt, &d.Voltage}, {cur, &d.Current}, {pow, &d.Power}, {bat, &d.Battery}} {
		if p.src.Valid {
			v := p.src.Float64
			*p.dst = &v
		}
	}
	if rssi.Valid {
		d.RSSI = &rssi.Int64
	}
	if uptime.Valid {
		d.UptimeS = &uptime.Int64
	}
	d.CreatedAt = msToTime(created)
	return &d, nil
}

// CreateDevices creates all devices or none.
func (s *DeviceService) CreateDevices(ctx context.Context, ds []*herd.Device) (err error) {
	defer wrapOp("sqldb.CreateDevices", &err)
	a, err := actor(ctx)
	if err != nil {
		return err
	} else if len(ds) == 0 {
		return herd.Errorf(herd.EINVALID, "no devices given")
	} else if len(ds) > herd.MaxBatchDevices {
		return herd.Errorf(herd.EINVALID, "at most %d devices in one batch", herd.MaxBatchDevices)
	}
	seen := make(map[string]int, len(ds))
	for i, d := range ds {
		if err := d.Validate(); err != nil {
			if len(ds) > 1 {
				return herd.Errorf(herd.ErrorCode(err), "devices[%d]: %s", i, herd.ErrorMessage(err))
			}
			return err
		}
		if j, dup := seen[d.Key]; dup {
			// The same clash the store reports for a key already taken.
			return herd.Errorf(herd.ECONFLICT, "devices[%d]: key %q repeats devices[%d]", i, d.Key, j)
		}
		seen[d.Key] = i
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	nodes := map[int64]*herd.Node{}
	for _, d := range ds {
		n, ok := nodes[d.NodeID]
		if !ok {
			if n, err = tx.findNode(ctx, a, d.NodeID); err != nil {
				return err
			} else if !a.Allows(n.TenantID, n.Path, herd.RoleAdmin) {
				return herd.Errorf(herd.EFORBIDDEN, "admin role on node %d required", n.ID)
			}
			nodes[d.NodeID] = n
		}
		d.TenantID, d.Path = n.TenantID, n.Path
	}
	if err := tx.insertDevices(ctx, ds); err != nil {
		return err
	} else if err := tx.insertLabels(ctx, ds); err != nil {
		return err
	} else if err := tx.insertSearch(ctx, ds); err != nil {
		return err
	}
	perPath := map[string]int64{}
	for _, d := range ds {
		perPath[d.Path]++
	}
	for path, n := range perPath {
		if err := tx.adjustDeviceCounts(ctx, path, n); err != nil {
			return err
		}
	}
	evs := map[int64][]*herd.Event{}
	for _, d := range ds {
		evs[d.TenantID] = append(evs[d.TenantID], newEvent(herd.EventDeviceCreated, herd.EventSubjectDevice, d.ID, d.Path, d))
	}
	for tenantID, list := range evs {
		if err := tx.appendEvents(ctx, tenantID, list...); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// insertColumns are the columns a new device row is written with.
var insertColumns = []string{"tenant_id", "node_id", "path", "key", "name", "model", "firmware", "status", "online", "last_seen",
	"temperature", "humidity", "pressure", "voltage", "current", "power", "battery", "rssi", "uptime_s", "error_count", "config_version", "created_at", "rev"}

var insertColumnList = strings.Join(insertColumns, ", ")

// insertDevices writes devices and sets their ids: on SQLite in
// multi-row statements, each chunk under the parameter guard; on
// PostgreSQL in one statement (insertDevicesArrays).
func (tx *Tx) insertDevices(ctx context.Context, ds []*herd.Device) error {
	rev, err := tx.deviceRev(ctx)
	if err != nil {
		return err
	}
	for _, d := range ds {
		if d.CreatedAt.IsZero() {
			d.CreatedAt = tx.now
		}
	}
	if tx.db.dialect == Postgres {
		return tx.insertDevicesArrays(ctx, ds, rev)
	}
	cols := len(insertColumns)
	per := herd.MaxQueryParams / cols
	row := "(" + strings.TrimSuffix(strings.Repeat("?,", cols), ",") + ")"
	for start := 0; start < len(ds); start += per {
		chunk := ds[start:min(start+per, len(ds))]
		var b strings.Builder
		b.WriteString("INSERT INTO devices (" + insertColumnList + ") VALUES ")
		args := make([]any, 0, len(chunk)*cols)
		for i, d := range chunk {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(row)
			args = append(append(args, deviceArgs(d)...), rev)
		}
		b.WriteString(" RETURNING id, key")
		rows, err := tx.queryChunk(ctx, len(chunk) == per, b.String(), args...)
		if err != nil {
			return formatError(err, "a device key is already taken")
		}
		if err := scanInsertedIDs(rows, chunk); err != nil {
			return err
		}
	}
	return nil
}

// scanInsertedIDs sets the ids of the devices just inserted from rows of
// (id, key), and closes rows. RETURNING promises no row order, so ids are
// matched by key.
func scanInsertedIDs(rows *sql.Rows, ds []*herd.Device) error {
	byKey := make(map[string]*herd.Device, len(ds))
	for _, d := range ds {
		byKey[d.Key] = d
	}
	n := 0
	for rows.Next() {
		var id int64
		var key string
		if err := rows.Scan(&id, &key); err != nil {
			rows.Close()
			return err
		}
		if d := byKey[key]; d != nil {
			d.ID, d.Version = id, 1 // the column's default
			n++
		}
	}
	if err := rows.Err(); err != nil {
		rows.Close()
		return formatError(err, "a device key is already taken")
	} else if err := rows.Close(); err != nil {
		return formatError(err, "a device key is already taken")
	} else if n != len(ds) {
		return fmt.Errorf("insert devices: %d ids returned for %d rows", n, len(ds))
	}
	return nil
}

func deviceArgs(d *herd.Device) []any {
	var lastSeen any
	if d.LastSeen != nil {
		lastSeen = d.LastSeen.UnixMilli()
	}
	f := func(p *float64) any {
		if p == nil {
			return nil
		}
		return *p
	}
	i := func(p *int64) any {
		if p == nil {
			return nil
		}
		return *p
	}
	return []any{d.TenantID, d.NodeID, d.Path, d.Key, d.Name, d.Model, d.Firmware, d.Status, d.Online, lastSeen,
		f(d.Temperature), f(d.Humidity), f(d.Pressure), f(d.Voltage), f(d.Current), f(d.Power), f(d.Battery),
		i(d.RSSI), i(d.UptimeS), d.ErrorCount, d.ConfigVersion, d.CreatedAt.UnixMilli()}
}

// FindDeviceByID returns a device within the actor's grants.
func (s *DeviceService) FindDeviceByID(ctx context.Context, id int64) (_ *herd.Device, err error) {
	defer wrapOp("sqldb.FindDeviceByID", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.Device, error) { return tx.findDevice(ctx, a, id, herd.RoleViewer) })
}

// findDevice returns ENOTFOUND for a device the actor cannot see, and
// EFORBIDDEN for one they see but may not act on with role min.
func (tx *Tx) findDevice(ctx context.Context, a *herd.Actor, id int64, min herd.Role) (*herd.Device, error) {
	cond, args := tenantCond(a, "tenant_id")
	args = append([]any{id}, args...)
	d, err := scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = ?`+cond, args...))
	if err == nil {
		// In a write, read the path again under the tenant's tree lock (see
		// findNode).
		if locked, lerr := tx.lockTenantTree(ctx, d.TenantID); lerr != nil {
			return nil, lerr
		} else if locked {
			d, err = scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = ?`+cond, args...))
		}
	}
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !a.Allows(d.TenantID, d.Path, herd.RoleViewer)) {
		return nil, herd.Errorf(herd.ENOTFOUND, "device %d not found", id)
	} else if err != nil {
		return nil, err
	} else if !a.Allows(d.TenantID, d.Path, min) {
		return nil, herd.Errorf(herd.EFORBIDDEN, "%s role on device %d required", min, id)
	} else if err := tx.attachLabels(ctx, d.TenantID, []*herd.Device{d}); err != nil {
		return nil, err
	}
	return d, nil
}

// MoveDevice moves a device to another node; its path follows at once.
func (s *DeviceService) MoveDevice(ctx context.Context, id, nodeID int64) (_ *herd.Device, err error) {
	defer wrapOp("sqldb.MoveDevice", &err)
	a, err := actor(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	d, err := tx.findDevice(ctx, a, id, herd.RoleAdmin)
	if err != nil {
		return nil, err
	}
	n, err := tx.findNode(ctx, a, nodeID)
	if err != nil {
		return nil, err
	} else if n.TenantID != d.TenantID {
		return nil, herd.Errorf(herd.ENOTFOUND, "node %d not found", nodeID)
	} else if !a.Allows(n.TenantID, n.Path, herd.RoleAdmin) {
		return nil, herd.Errorf(herd.EFORBIDDEN, "admin role on node %d required", n.ID)
	}
	oldPath := d.Path
	d.NodeID, d.Path = n.ID, n.Path
	rev, err := tx.deviceRev(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE devices SET node_id = ?, path = ?, rev = ? WHERE id = ? AND tenant_id = ?`, d.NodeID, d.Path, rev, d.ID, d.TenantID); err != nil {
		return nil, err
	} else if err := tx.adjustDeviceCounts(ctx, oldPath, -1); err != nil {
		return nil, err
	} else if err := tx.adjustDeviceCounts(ctx, d.Path, 1); err != nil {
		return nil, err
	}
	ev := newEvent(herd.EventDeviceMoved, herd.EventSubjectDevice, d.ID, d.Path, map[string]any{"device": d, "old_path": oldPath})
	if err := tx.appendEvents(ctx, d.TenantID, ev); err != nil {
		return nil, err
	}
	return d, tx.Commit()
}

// DeleteDevice deletes a device and records the event.
func (s *DeviceService) DeleteDevice(ctx context.Context, id int64) (err error) {
	defer wrapOp("sqldb.DeleteDevice", &err)
	a, err := actor(ctx)
	if err != nil {
		return err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	d, err := tx.findDevice(ctx, a, id, herd.RoleAdmin)
	if err != nil {
		return err
	}
	rev, err := tx.deviceRev(ctx)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE id = ? AND tenant_id = ?`, id, d.TenantID); err != nil {
		return err
	} else if _, err := tx.ExecContext(ctx, `INSERT INTO device_tombstones (tenant_id, device_id, rev, deleted_at) VALUES (?, ?, ?, ?)`, d.TenantID, d.ID, rev, tx.now.UnixMilli()); err != nil {
		return err
	} else if err := tx.adjustDeviceCounts(ctx, d.Path, -1); err != nil {
		return err
	}
	ev := newEvent(herd.EventDeviceDeleted, herd.EventSubjectDevice, d.ID, d.Path, map[string]any{"id": fmt.Sprint(d.ID), "key": d.Key})
	if err := tx.appendEvents(ctx, d.TenantID, ev); err != nil {
		return err
	}
	return tx.Commit()
}

// adjustDeviceCounts adds delta to the device count of the node at path and
// of each of its ancestors: one statement with at most depth parameters.
func (tx *Tx) adjustDeviceCounts(ctx context.Context, path string, delta int64) error {
	ids, err := herd.PathIDs(path)
	if err != nil {
		return err
	} else if len(ids) == 0 || delta == 0 {
		return nil
	}
	args := make([]any, 0, len(ids)+1)
	args = append(args, delta)
	for _, id := range ids {
		args = append(args, id)
	}
	_, err = tx.ExecContext(ctx, `UPDATE nodes SET device_count = device_count + ? WHERE id IN (`+strings.TrimSuffix(strings.Repeat("?,", len(ids)), ",")+`)`, args...)
	return err
}
