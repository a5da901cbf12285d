package sqldb

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/herd-iot/herd"
)

// On PostgreSQL a batch's new rows go in as one array a column, unnested,
// in one statement: a batch of 1,000 devices is one round trip, not the
// 48 that multi-row VALUES under the parameter guard takes (23 columns
// of 500 parameters), and the server plans it once. These are writes of
// the batch's own new rows, never a list of ids standing for a scope.

// unnestRows is a SELECT of the rows of arrays given as its parameters, one
// a column, of these PostgreSQL types.
func unnestRows(types ...string) string {
	casts := make([]string, len(types))
	for i, t := range types {
		casts[i] = "CAST(? AS " + t + "[])"
	}
	return "SELECT * FROM unnest(" + strings.Join(casts, ", ") + ")"
}

// insertDevicesSQL writes the rows of insertColumns' arrays, of these
// types in their order.
var insertDevicesSQL = `INSERT INTO devices (` + insertColumnList + `) ` + unnestRows(slices.Concat([]string{"BIGINT", "BIGINT"}, slices.Repeat([]string{"TEXT"}, 6), []string{"BOOLEAN", "BIGINT"},
	slices.Repeat([]string{"DOUBLE PRECISION"}, 7), slices.Repeat([]string{"BIGINT"}, 6))...) + ` RETURNING id, key`

// insertDevicesArrays is insertDevices on PostgreSQL.
func (tx *Tx) insertDevicesArrays(ctx context.Context, ds []*herd.Device, rev int64) error {
	n := len(ds)
	var (
		tenants, nodes, errs, cfgs, created, revs = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		paths, keys, names, models, fws, stats    = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		online                                    = make([]bool, n)
		lastSeen, rssi, uptime                    = make([]*int64, n), make([]*int64, n), make([]*int64, n)
		floats                                    [7][]*float64
	)
	for k := range floats {
		floats[k] = make([]*float64, n)
	}
	for i, d := range ds {
		tenants[i], nodes[i], errs[i], cfgs[i], created[i], revs[i] = d.TenantID, d.NodeID, d.ErrorCount, d.ConfigVersion, d.CreatedAt.UnixMilli(), rev
		paths[i], keys[i], names[i], models[i], fws[i], stats[i] = d.Path, d.Key, d.Name, d.Model, d.Firmware, d.Status
		online[i], rssi[i], uptime[i] = d.Online, d.RSSI, d.UptimeS
		if d.LastSeen != nil {
			ms := d.LastSeen.UnixMilli()
			lastSeen[i] = &ms
		}
		for k, p := range []*float64{d.Temperature, d.Humidity, d.Pressure, d.Voltage, d.Current, d.Power, d.Battery} {
			floats[k][i] = p
		}
	}
	rows, err := tx.QueryContext(ctx, insertDevicesSQL,
		tenants, nodes, paths, keys, names, models, fws, stats, online, lastSeen,
		floats[0], floats[1], floats[2], floats[3], floats[4], floats[5], floats[6],
		rssi, uptime, errs, cfgs, created, revs)
	if err != nil {
		return formatError(err, "a device key is already taken")
	}
	return scanInsertedIDs(rows, ds)
}

// insertEventsArrays writes one tenant's events on PostgreSQL, their
// tenant, sequence numbers and times set.
func (tx *Tx) insertEventsArrays(ctx context.Context, evs []*herd.Event) error {
	n := len(evs)
	tenants, seqs, subjects, created := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	types, subjectTypes, paths, payloads := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, e := range evs {
		tenants[i], seqs[i], subjects[i], created[i] = e.TenantID, e.Seq, e.SubjectID, e.CreatedAt.UnixMilli()
		types[i], subjectTypes[i], paths[i], payloads[i] = e.Type, e.SubjectType, e.Path, string(e.Payload)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO events (`+eventInsertColumns+`) `+unnestRows("BIGINT", "BIGINT", "TEXT", "TEXT", "BIGINT", "TEXT", "TEXT", "BIGINT"),
		tenants, seqs, types, subjectTypes, subjects, paths, payloads, created)
	if err != nil {
		return fmt.Errorf("insert events: %w", err)
	}
	return nil
}

// insertLabelsArrays is insertLabels on PostgreSQL.
func (tx *Tx) insertLabelsArrays(ctx context.Context, ds []*herd.Device) error {
	var tenants, devices []int64
	var keys, values []string
	var folds []*string
	for _, d := range ds {
		for _, k := range slices.Sorted(maps.Keys(d.Labels)) {
			tenants, devices = append(tenants, d.TenantID), append(devices, d.ID)
			keys, values = append(keys, k), append(values, d.Labels[k])
			var fold *string
			if f, ok := valueFold(d.Labels[k]).(string); ok {
				fold = &f
			}
			folds = append(folds, fold)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO device_labels (tenant_id, device_id, key, value, value_fold) `+unnestRows("BIGINT", "BIGINT", "TEXT", "TEXT", "TEXT"),
		tenants, devices, keys, values, folds)
	if err != nil {
		return fmt.Errorf("insert labels: %w", err)
	}
	return nil
}
