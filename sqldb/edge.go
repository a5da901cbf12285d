package sqldb

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/herd-iot/herd"
)

// CredentialService implements herd.CredentialService.
type CredentialService struct{ db *DB }

var _ herd.CredentialService = (*CredentialService)(nil)

// NewCredentialService returns the device credential service of db.
func NewCredentialService(db *DB) *CredentialService { return &CredentialService{db: db} }

// CreateDeviceCredential makes a new token for the device, replacing the old.
func (s *CredentialService) CreateDeviceCredential(ctx context.Context, deviceID int64) (_ *herd.DeviceCredential, err error) {
	defer wrapOp("sqldb.CreateDeviceCredential", &err)
	cs, err := s.CreateDeviceCredentials(ctx, []int64{deviceID})
	if err != nil {
		return nil, err
	}
	return cs[0], nil
}

// CreateDeviceCredentials makes a credential for each device in one
// transaction, for provisioning a fleet; like CreateDeviceCredential each.
func (s *CredentialService) CreateDeviceCredentials(ctx context.Context, deviceIDs []int64) (_ []*herd.DeviceCredential, err error) {
	defer wrapOp("sqldb.CreateDeviceCredentials", &err)
	if len(deviceIDs) > herd.MaxBatchDevices {
		return nil, herd.Errorf(herd.EINVALID, "at most %d devices in one batch", herd.MaxBatchDevices)
	}
	seen := make(map[int64]int, len(deviceIDs))
	for i, id := range deviceIDs {
		if j, dup := seen[id]; dup {
			// The second token would replace the first within the batch.
			return nil, herd.Errorf(herd.EINVALID, "device_ids[%d]: device %d repeats device_ids[%d]", i, id, j)
		}
		seen[id] = i
	}
	a, err := actor(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	out := make([]*herd.DeviceCredential, 0, len(deviceIDs))
	var events []*herd.Event
	for _, id := range deviceIDs {
		d, err := tx.findDevice(ctx, a, id, herd.RoleAdmin)
		if err != nil {
			return nil, err
		}
		c := &herd.DeviceCredential{DeviceID: d.ID, TenantID: d.TenantID, Key: d.Key, Token: NewTokenSecret(), CreatedAt: tx.now}
		if _, err := tx.ExecContext(ctx, `INSERT INTO device_credentials (device_id, tenant_id, hash, created_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (device_id) DO UPDATE SET hash = excluded.hash, created_at = excluded.created_at`,
			d.ID, d.TenantID, hashToken(c.Token), tx.now.UnixMilli()); err != nil {
			return nil, err
		}
		ev := newEvent(herd.EventDeviceCredentialCreated, herd.EventSubjectDevice, d.ID, d.Path, map[string]any{"device_id": fmt.Sprint(d.ID), "key": d.Key})
		ev.TenantID = d.TenantID
		events = append(events, ev)
		out = append(out, c)
	}
	if err := tx.appendEventsByTenant(ctx, events); err != nil {
		return nil, err
	}
	return out, tx.Commit()
}

// DeleteDeviceCredential revokes the device's credential.
func (s *CredentialService) DeleteDeviceCredential(ctx context.Context, deviceID int64) (err error) {
	defer wrapOp("sqldb.DeleteDeviceCredential", &err)
	a, err := actor(ctx)
	if err != nil {
		return err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	d, err := tx.findDevice(ctx, a, deviceID, herd.RoleAdmin)
	if err != nil {
		return err
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM device_credentials WHERE device_id = ? AND tenant_id = ?`, d.ID, d.TenantID)
	if err != nil {
		return err
	} else if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return herd.Errorf(herd.ENOTFOUND, "device %d has no credential", d.ID)
	}
	ev := newEvent(herd.EventDeviceCredentialDeleted, herd.EventSubjectDevice, d.ID, d.Path, map[string]any{"device_id": fmt.Sprint(d.ID), "key": d.Key})
	if err := tx.appendEvents(ctx, d.TenantID, ev); err != nil {
		return err
	}
	return tx.Commit()
}

// AuthenticateDevice checks a device's key and token. An unknown key and a
// wrong token are the same answer, so that keys cannot be probed.
func (s *CredentialService) AuthenticateDevice(ctx context.Context, key, token string) (_ *herd.DeviceIdentity, err error) {
	defer wrapOp("sqldb.AuthenticateDevice", &err)
	bad := herd.Errorf(herd.EUNAUTHORIZED, "bad device key or token")
	// A key that is not text no device can have; PostgreSQL would refuse
	// it in the lookup, as an error instead of a bad key.
	if key == "" || !herd.ValidText(key) || !herd.IsTokenSecret(token) {
		return nil, bad
	}
	tx, err := s.db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	id := &herd.DeviceIdentity{Key: key}
	err = tx.QueryRowContext(ctx, `SELECT d.id, d.tenant_id FROM devices d JOIN device_credentials c ON c.device_id = d.id AND c.tenant_id = d.tenant_id WHERE d.key = ? AND c.hash = ?`,
		key, hashToken(token)).Scan(&id.DeviceID, &id.TenantID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, bad
	} else if err != nil {
		return nil, err
	}
	return id, nil
}

// IngestService implements herd.IngestService.
type IngestService struct{ db *DB }

var _ herd.IngestService = (*IngestService)(nil)

// NewIngestService returns the ingest service of db.
func NewIngestService(db *DB) *IngestService { return &IngestService{db: db} }

// readingColumns are the history columns, in the order readingArgs gives.
var readingColumns = []string{"device_id", "ts", "tenant_id", "received_at", "temperature", "humidity", "pressure", "voltage",
	"current", "power", "battery", "rssi", "uptime_s", "error_count", "status", "firmware", "extra"}

// projectionFields are the reading fields that are projection columns too,
// in the history's column order: each with its bit in herd.ReadingFields,
// its SQL type (for a VALUES list) and its value.
var projectionFields = []projectionField{
	{"temperature", herd.ReadingTemperature, "DOUBLE PRECISION", func(r *herd.Reading) any { return r.Temperature }},
	{"humidity", herd.ReadingHumidity, "DOUBLE PRECISION", func(r *herd.Reading) any { return r.Humidity }},
	{"pressure", herd.ReadingPressure, "DOUBLE PRECISION", func(r *herd.Reading) any { return r.Pressure }},
	{"voltage", herd.ReadingVoltage, "DOUBLE PRECISION", func(r *herd.Reading) any { return r.Voltage }},
	{"current", herd.ReadingCurrent, "DOUBLE PRECISION", func(r *herd.Reading) any { return r.Current }},
	{"power", herd.ReadingPower, "DOUBLE PRECISION", func(r *herd.Reading) any { return r.Power }},
	{"battery", herd.ReadingBattery, "DOUBLE PRECISION", func(r *herd.Reading) any { return r.Battery }},
	{"rssi", herd.ReadingRSSI, "BIGINT", func(r *herd.Reading) any { return r.RSSI }},
	{"uptime_s", herd.ReadingUptimeS, "BIGINT", func(r *herd.Reading) any { return r.UptimeS }},
	{"error_count", herd.ReadingErrorCount, "BIGINT", func(r *herd.Reading) any { return r.ErrorCount }},
	{"status", herd.ReadingStatus, "TEXT", func(r *herd.Reading) any { return r.Status }},
	{"firmware", herd.ReadingFirmware, "TEXT", func(r *herd.Reading) any { return r.Firmware }},
}

func readingArgs(it *herd.IngestItem) []any {
	r := &it.Reading
	args := make([]any, 0, len(readingColumns))
	args = append(args, it.DeviceID, r.TS, it.TenantID, it.At)
	for _, f := range projectionFields {
		if r.Has&f.bit != 0 {
			args = append(args, f.value(r))
		} else {
			args = append(args, nil)
		}
	}
	if r.Extra != nil {
		return append(args, string(r.Extra))
	}
	return append(args, nil)
}

// Ingest stores a batch of device activity in one transaction.
func (s *IngestService) Ingest(ctx context.Context, items []herd.IngestItem) (err error) {
	defer wrapOp("sqldb.Ingest", &err)
	if len(items) == 0 {
		return nil
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// Connects and disconnects write events, which lock their tenant's
	// row. Every other writer locks the tenant before its device rows, so
	// the batch does too, in tenant id order, or the two could deadlock on
	// PostgreSQL. Batches of readings alone write no events and lock no
	// tenant: they do not wait for the tenant's other writes.
	var tenants []int64
	for i := range items {
		if items[i].Kind != herd.IngestReading {
			tenants = append(tenants, items[i].TenantID)
		}
	}
	slices.Sort(tenants)
	for _, t := range slices.Compact(tenants) {
		if _, err := tx.lockTenantTree(ctx, t); err != nil {
			return err
		}
	}
	rev, err := tx.deviceRev(ctx)
	if err != nil {
		return err
	}
	inserted, err := tx.insertReadings(ctx, items)
	if err != nil {
		return err
	}

	// Per device, in arrival order: readings since the last connection
	// change fold into one projection update, made before that change.
	// A device's k-th connection change of the batch goes in round k, with
	// the readings before it; all devices' round k is one set of
	// statements, so a batch of reconnects costs a few statements, not a
	// few per device.
	order := make([]int, len(items))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(items[a].DeviceID, items[b].DeviceID) })
	type round struct {
		folds   []deviceFold
		reports []*herd.IngestItem // device events, before the round's connection changes
		conns   []*herd.IngestItem
	}
	var rounds []round
	var acks []*herd.IngestItem // answers to commands, after the rest
	var configAcks, progress []*herd.IngestItem
	var finals []deviceFold
	var fold []*herd.Reading // in arrival order
	var foldAt int64
	var seenTS []int64 // the device's reading times in this batch
	tsMax := int64(math.MinInt64)
	k := 0 // the device's round
	for n, i := range order {
		it := &items[i]
		switch it.Kind {
		case herd.IngestReading:
			foldAt = max(foldAt, it.At)
			// A second reading of the same time is the first sent again:
			// the history keeps the first, and so does the projection.
			// Times mostly rise, and a later one cannot be a repeat: only
			// a reading out of order pays for the scan.
			if ts := it.Reading.TS; ts > tsMax || !slices.Contains(seenTS, ts) {
				seenTS, tsMax = append(seenTS, ts), max(tsMax, ts)
				fold = append(fold, &it.Reading)
			}
		case herd.IngestConnect, herd.IngestDisconnect:
			if k == len(rounds) {
				rounds = append(rounds, round{})
			}
			if len(fold) > 0 {
				rounds[k].folds = append(rounds[k].folds, deviceFold{deviceID: it.DeviceID, readings: slices.Clone(fold), at: foldAt})
				fold, foldAt = fold[:0], 0
			}
			rounds[k].conns = append(rounds[k].conns, it)
			k++
		case herd.IngestEvent:
			if k == len(rounds) {
				rounds = append(rounds, round{})
			}
			rounds[k].reports = append(rounds[k].reports, it)
		case herd.IngestCommandAck:
			acks = append(acks, it)
		case herd.IngestConfigAck:
			configAcks = append(configAcks, it)
		case herd.IngestOTAProgress:
			progress = append(progress, it)
		default:
			return fmt.Errorf("ingest: unknown item kind %d", it.Kind)
		}
		if n+1 == len(order) || items[order[n+1]].DeviceID != it.DeviceID {
			// The device's last readings come after all its connection
			// changes: they join one update for the whole batch.
			if len(fold) > 0 {
				finals = append(finals, deviceFold{deviceID: it.DeviceID, readings: slices.Clone(fold), at: foldAt})
				fold = fold[:0]
			}
			seenTS, tsMax = seenTS[:0], math.MinInt64
			foldAt, k = 0, 0
		}
	}
	var events []*herd.Event
	folded := map[int64]rollupDevice{}
	for _, r := range rounds {
		if err := tx.applyFolds(ctx, r.folds, rev, folded); err != nil {
			return err
		}
		reported, err := tx.applyReports(ctx, r.reports, rev)
		if err != nil {
			return err
		}
		evs, err := tx.applyConnections(ctx, r.conns, rev)
		if err != nil {
			return err
		}
		events = append(append(events, reported...), evs...)
	}
	if err := tx.applyFolds(ctx, finals, rev, folded); err != nil {
		return err
	} else if err := tx.indexReportedFirmware(ctx, items, folded); err != nil {
		return err
	}
	acked, err := tx.applyCommandAcks(ctx, acks)
	if err != nil {
		return err
	}
	events = append(events, acked...)
	configured, err := tx.applyConfigAcks(ctx, configAcks, rev)
	if err != nil {
		return err
	}
	ota, err := tx.applyOTAProgress(ctx, progress)
	if err != nil {
		return err
	}
	events = append(append(events, configured...), ota...)
	if err := tx.appendEventsByTenant(ctx, events); err != nil {
		return err
	}
	// Last, after the projection (a firmware the batch reported is the one
	// its readings count under): on PostgreSQL the rollups' rows stay
	// locked until the commit, and every transaction of the same nodes and
	// minute waits for them, so they are taken as late as possible.
	if err := tx.applyRollups(ctx, items, inserted, folded); err != nil {
		return err
	}
	// The per-device rollups' marks, as late: their rows stay locked
	// until the commit too.
	if err := tx.markStaleDeviceRollups(ctx, items, inserted); err != nil {
		return err
	}
	if err := tx.checkIngestDuration(); err != nil {
		return err
	}
	return tx.Commit()
}

// newestWith returns, of a device's readings, the newest (by ts) that
// carries the field, or nil.
func newestWith(rs []*herd.Reading, bit herd.ReadingFields) *herd.Reading {
	var n *herd.Reading
	for _, r := range rs {
		if r.Has&bit != 0 && (n == nil || r.TS > n.TS) {
			n = r
		}
	}
	return n
}

// deviceFold is one device's readings of a batch, for the projection.
type deviceFold struct {
	deviceID int64
	readings []*herd.Reading
	at       int64
}

// projectionField is a projection column a reading may carry.
type projectionField struct {
	col   string
	bit   herd.ReadingFields
	typ   string // SQL type of the value, for the VALUES list
	value func(*herd.Reading) any
}

// applyFolds writes devices' readings into the projection: each field takes
// the value of the newest reading that carries it, unless the projection
// already holds a newer reading than that one (a backlog arriving late), so
// an old reading folded with a new one changes no more than it would alone;
// last_seen follows arrival either way. Devices whose readings carry
// the same fields share an UPDATE ... FROM a VALUES list, as many rows as
// the parameter guard allows. One statement per device costs a parse on
// SQLite and a round trip on PostgreSQL for each.
//
// It records in seen each device's node, model and firmware as the update
// left them, which the rollups count the readings under.
func (tx *Tx) applyFolds(ctx context.Context, folds []deviceFold, rev int64, seen map[int64]rollupDevice) error {
	groups := map[herd.ReadingFields][]deviceFold{}
	var masks []herd.ReadingFields
	for _, f := range folds {
		var mask herd.ReadingFields
		for _, r := range f.readings {
			mask |= r.Has
		}
		if groups[mask] == nil {
			masks = append(masks, mask)
		}
		groups[mask] = append(groups[mask], f)
	}
	slices.Sort(masks)
	for _, mask := range masks {
		var fields []projectionField
		for _, f := range projectionFields {
			if mask&f.bit != 0 {
				fields = append(fields, f)
			}
		}
		// Per row: id, ts, at, then each field's reading time and value.
		cols := 3 + 2*len(fields)
		per := (herd.MaxQueryParams - 1) / cols
		group := groups[mask]
		for start := 0; start < len(group); start += per {
			chunk := group[start:min(start+per, len(group))]
			q, args := tx.foldUpdate(fields, mask, chunk, rev)
			if err := tx.readFoldedDevices(ctx, q, args, seen); err != nil {
				return fmt.Errorf("apply readings: %w", err)
			}
		}
	}
	return nil
}

// foldUpdate builds the UPDATE of one chunk of devices whose readings carry
// the given fields.
func (tx *Tx) foldUpdate(fields []projectionField, mask herd.ReadingFields, chunk []deviceFold, rev int64) (string, []any) {
	args := make([]any, 0, len(chunk)*(3+2*len(fields))+1)
	for _, f := range chunk {
		ts := f.readings[0].TS
		for _, r := range f.readings[1:] {
			ts = max(ts, r.TS)
		}
		args = append(args, f.deviceID, ts, f.at)
		for _, pf := range fields {
			if r := newestWith(f.readings, pf.bit); r != nil {
				args = append(args, r.TS, pf.value(r))
			} else {
				args = append(args, nil, nil)
			}
		}
	}
	q := tx.memoText(fmt.Sprintf("fold/%d/%d", mask, len(chunk)), func() string {
		var b strings.Builder
		names := []string{"id", "ts", "at"}
		for _, f := range fields {
			names = append(names, "t_"+f.col, "v_"+f.col)
		}
		b.WriteString("WITH v (" + strings.Join(names, ", ") + ") AS (VALUES ")
		for i := range chunk {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString("(CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT)")
			for _, pf := range fields {
				b.WriteString(", CAST(? AS BIGINT), CAST(? AS " + pf.typ + ")")
			}
			b.WriteByte(')')
		}
		// SET reads the row as it was before the update: every CASE sees
		// the old reading_ts. A field no reading of the device carried has
		// a NULL time and keeps its value; readings older than the
		// projection's (a backlog) change only last_seen.
		b.WriteString(") UPDATE devices SET reading_ts = CASE WHEN devices.reading_ts IS NULL OR devices.reading_ts <= v.ts THEN v.ts ELSE devices.reading_ts END, last_seen = CASE WHEN devices.last_seen IS NULL OR devices.last_seen < v.at THEN v.at ELSE devices.last_seen END")
		for _, f := range fields {
			fmt.Fprintf(&b, ", %[1]s = CASE WHEN v.t_%[1]s IS NOT NULL AND (devices.reading_ts IS NULL OR devices.reading_ts < v.t_%[1]s) THEN v.v_%[1]s ELSE devices.%[1]s END", f.col)
		}
		b.WriteString(", rev = ? FROM v WHERE devices.id = v.id RETURNING devices.id, devices.node_id, devices.model, devices.firmware")
		return b.String()
	})
	return q, append(args, rev)
}

// statementTexts memoizes the text of the ingest's batch statements, in the
// dialect's placeholders: it depends only on their shape (which fields, how
// many rows), and building a VALUES list of dozens of rows anew for every
// chunk was a sixth of the gateway's allocations. It keeps at most
// maxStatementTexts shapes.
var statementTexts struct {
	sync.Mutex
	m map[string]string
}

const maxStatementTexts = 2048

func (tx *Tx) memoText(key string, build func() string) string {
	key = string(tx.db.dialect) + "/" + key
	statementTexts.Lock()
	q, ok := statementTexts.m[key]
	statementTexts.Unlock()
	if ok {
		return q
	}
	q = tx.db.rebind(build())
	statementTexts.Lock()
	if statementTexts.m == nil {
		statementTexts.m = map[string]string{}
	}
	if len(statementTexts.m) < maxStatementTexts {
		statementTexts.m[key] = q
	}
	statementTexts.Unlock()
	return q
}

// touchAll moves devices' last_seen forward to their items' times.
func (tx *Tx) touchAll(ctx context.Context, items []*herd.IngestItem, rev int64) error {
	for start := 0; start < len(items); start += connectionChunk {
		chunk := items[start:min(start+connectionChunk, len(items))]
		args := make([]any, 0, 2*len(chunk)+1)
		for _, it := range chunk {
			args = append(args, it.DeviceID, it.At)
		}
		q := tx.memoText("touch/"+strconv.Itoa(len(chunk)), func() string {
			return idAtValues(len(chunk)) + " UPDATE devices SET last_seen = v.at, rev = ? FROM v WHERE devices.id = v.id AND (devices.last_seen IS NULL OR devices.last_seen < v.at)"
		})
		if _, err := tx.execCached(ctx, q, append(args, rev)...); err != nil {
			return fmt.Errorf("touch devices: %w", err)
		}
	}
	return nil
}

// applyReports turns events devices reported into device.reported events,
// in the order given, and moves the devices' last_seen. Events of devices
// that no longer exist are dropped.
func (tx *Tx) applyReports(ctx context.Context, items []*herd.IngestItem, rev int64) ([]*herd.Event, error) {
	if len(items) == 0 {
		return nil, nil
	}
	// One row per device, at its latest event.
	latest := map[int64]int64{}
	var ids []int64
	for _, it := range items {
		if at, ok := latest[it.DeviceID]; !ok {
			ids = append(ids, it.DeviceID)
			latest[it.DeviceID] = it.At
		} else {
			latest[it.DeviceID] = max(at, it.At)
		}
	}
	type device struct{ path, key string }
	found := make(map[int64]device, len(ids))
	for start := 0; start < len(ids); start += connectionChunk {
		chunk := ids[start:min(start+connectionChunk, len(ids))]
		args := make([]any, 0, 2*len(chunk)+1)
		for _, id := range chunk {
			args = append(args, id, latest[id])
		}
		q := tx.memoText("report/"+strconv.Itoa(len(chunk)), func() string {
			return idAtValues(len(chunk)) + " UPDATE devices SET last_seen = CASE WHEN devices.last_seen IS NULL OR devices.last_seen < v.at THEN v.at ELSE devices.last_seen END, rev = ? FROM v WHERE devices.id = v.id RETURNING devices.id, devices.path, devices.key"
		})
		rows, err := tx.queryCached(ctx, q, append(args, rev)...)
		if err != nil {
			return nil, fmt.Errorf("apply device events: %w", err)
		}
		for rows.Next() {
			var id int64
			var d device
			if err := rows.Scan(&id, &d.path, &d.key); err != nil {
				rows.Close()
				return nil, err
			}
			found[id] = d
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return nil, fmt.Errorf("apply device events: %w", err)
		}
	}
	var events []*herd.Event
	for _, it := range items {
		d, ok := found[it.DeviceID]
		if !ok {
			continue
		}
		ev := newEvent(herd.EventDeviceReported, herd.EventSubjectDevice, it.DeviceID, d.path,
			map[string]any{"device_id": fmt.Sprint(it.DeviceID), "key": d.key, "at": msToTime(it.At), "data": json.RawMessage(it.Data)})
		ev.TenantID = it.TenantID
		events = append(events, ev)
	}
	return events, nil
}

// idAtValues is the head of a statement over n devices and times:
// WITH v (id, at) AS (VALUES ...).
func idAtValues(n int) string {
	return "WITH v (id, at) AS (VALUES " + strings.TrimSuffix(strings.Repeat("(CAST(? AS BIGINT), CAST(? AS BIGINT)),", n), ",") + ")"
}

// applyConnections records connects and disconnects, one per device, and
// returns the events of those that changed whether a device is online. A
// connect of a device already online (a takeover), or a disconnect of one
// already offline, changes nothing but a connect's last_seen.
func (tx *Tx) applyConnections(ctx context.Context, items []*herd.IngestItem, rev int64) ([]*herd.Event, error) {
	var on, off []*herd.IngestItem
	for _, it := range items {
		if it.Kind == herd.IngestConnect {
			on = append(on, it)
		} else {
			off = append(off, it)
		}
	}
	var events []*herd.Event
	for _, group := range [][]*herd.IngestItem{on, off} {
		online := len(group) > 0 && group[0].Kind == herd.IngestConnect
		byID := make(map[int64]*herd.IngestItem, len(group))
		changed := map[int64]bool{}
		for start := 0; start < len(group); start += connectionChunk {
			chunk := group[start:min(start+connectionChunk, len(group))]
			args := make([]any, 0, 2*len(chunk)+3)
			for _, it := range chunk {
				args = append(args, it.DeviceID, it.At)
				byID[it.DeviceID] = it
			}
			var q string
			// Connectivity is online and last_seen; status is the health
			// the device last reported and stays as it was, so that a
			// device that said warn and hung up is still warn, and offline.
			if online {
				q = tx.memoText("connect/"+strconv.Itoa(len(chunk)), func() string {
					return idAtValues(len(chunk)) + " UPDATE devices SET online = ?, last_seen = CASE WHEN devices.last_seen IS NULL OR devices.last_seen < v.at THEN v.at ELSE devices.last_seen END, rev = ? FROM v WHERE devices.id = v.id AND devices.online = ? RETURNING devices.id, devices.path, devices.key"
				})
				args = append(args, true, rev, false)
			} else {
				q = tx.memoText("disconnect/"+strconv.Itoa(len(chunk)), func() string {
					return idAtValues(len(chunk)) + " UPDATE devices SET online = ?, rev = ? FROM v WHERE devices.id = v.id AND devices.online = ? RETURNING devices.id, devices.path, devices.key"
				})
				args = append(args, false, rev, true)
			}
			rows, err := tx.queryCached(ctx, q, args...)
			if err != nil {
				return nil, fmt.Errorf("apply connections: %w", err)
			}
			for rows.Next() {
				var id int64
				var path, key string
				if err := rows.Scan(&id, &path, &key); err != nil {
					rows.Close()
					return nil, err
				}
				changed[id] = true
				it := byID[id]
				typ := herd.EventDeviceOffline
				if online {
					typ = herd.EventDeviceOnline
				}
				ev := newEvent(typ, herd.EventSubjectDevice, id, path, map[string]any{"device_id": fmt.Sprint(id), "key": key, "at": msToTime(it.At)})
				ev.TenantID = it.TenantID
				events = append(events, ev)
			}
			if err := errors.Join(rows.Err(), rows.Close()); err != nil {
				return nil, fmt.Errorf("apply connections: %w", err)
			}
		}
		if online {
			// Already online (a takeover), or deleted: last_seen only.
			var seen []*herd.IngestItem
			for _, it := range group {
				if !changed[it.DeviceID] {
					seen = append(seen, it)
				}
			}
			if err := tx.touchAll(ctx, seen, rev); err != nil {
				return nil, err
			}
		}
	}
	// Events in the order the devices were given.
	slices.SortStableFunc(events, func(a, b *herd.Event) int { return cmp.Compare(a.SubjectID, b.SubjectID) })
	return events, nil
}

// connectionChunk is the devices of one connection statement: two
// parameters each, under the parameter guard.
const connectionChunk = (herd.MaxQueryParams - 3) / 2
