package sqldb

import (
	"context"
	"fmt"

	"github.com/herd-iot/herd"
)

// goMigrations are the steps of a migration that SQL cannot take, run
// after its SQL in its transaction: folding text is herd's (FoldText), not
// either engine's.
var goMigrations = map[string]func(ctx context.Context, tx *Tx) error{
	"0023_device_search.sql": backfillSearch,
}

// backfillSearch folds what was written before migration 0023: every
// node's name, the label values that folding changes, and a device_search
// row for every device. It is the one place that reads every tenant's rows
// in one statement: a migration's upkeep of the whole store, answering no
// caller; every row it writes names its tenant.
func backfillSearch(ctx context.Context, tx *Tx) error {
	if _, err := tx.ExecContext(ctx, `UPDATE nodes SET name_fold = name`); err != nil {
		return err
	}
	type fix struct {
		tenantID, id int64
		key, fold    string
	}
	var nodes []fix
	err := scanRows(ctx, tx, `SELECT tenant_id, id, name FROM nodes`, nil, func(scan func(...any) error) error {
		var f fix
		if err := scan(&f.tenantID, &f.id, &f.key); err != nil {
			return err
		}
		if f.fold = herd.FoldText(f.key); f.fold != f.key {
			nodes = append(nodes, f)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("fold node names: %w", err)
	}
	for _, n := range nodes {
		if _, err := tx.ExecContext(ctx, `UPDATE nodes SET name_fold = ? WHERE id = ? AND tenant_id = ?`, n.fold, n.id, n.tenantID); err != nil {
			return err
		}
	}
	var labels []fix
	err = scanRows(ctx, tx, `SELECT tenant_id, device_id, key, value FROM device_labels`, nil, func(scan func(...any) error) error {
		var f fix
		var v string
		if err := scan(&f.tenantID, &f.id, &f.key, &v); err != nil {
			return err
		}
		if f.fold = herd.FoldText(v); f.fold != v {
			labels = append(labels, f)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("fold label values: %w", err)
	}
	for _, l := range labels {
		if _, err := tx.ExecContext(ctx, `UPDATE device_labels SET value_fold = ? WHERE device_id = ? AND key = ? AND tenant_id = ?`, l.fold, l.id, l.key, l.tenantID); err != nil {
			return err
		}
	}
	return tx.indexDevicesForSearch(ctx, "", nil, nil, nil)
}

// indexDevicesForSearch writes the device_search rows of the devices that
// match where (a condition on the devices row d, with args), a chunk at a
// time in id order, with their labels: the stored ones, or with labelsOf
// set the ones it gives, which it writes too (a bulk load's). progress,
// when set, is told how many rows have been written.
func (tx *Tx) indexDevicesForSearch(ctx context.Context, where string, args []any, labelsOf func(*herd.Device) map[string]string, progress func(n int64)) error {
	const chunk = 2000
	after := int64(-1 << 63)
	var n int64
	for {
		cond := "d.id > ?"
		if where != "" {
			cond += " AND " + where
		}
		var ds []*herd.Device
		byID := map[int64]*herd.Device{}
		err := scanRows(ctx, tx, `SELECT d.id, d.tenant_id, d.name, d.key, d.model, d.firmware FROM devices d WHERE `+cond+` ORDER BY d.id LIMIT ?`,
			append(append([]any{after}, args...), chunk), func(scan func(...any) error) error {
				d := &herd.Device{}
				if err := scan(&d.ID, &d.TenantID, &d.Name, &d.Key, &d.Model, &d.Firmware); err != nil {
					return err
				}
				ds = append(ds, d)
				byID[d.ID] = d
				return nil
			})
		if err != nil {
			return fmt.Errorf("read devices to index: %w", err)
		} else if len(ds) == 0 {
			return nil
		}
		after = ds[len(ds)-1].ID
		if labelsOf != nil {
			for _, d := range ds {
				d.Labels = labelsOf(d)
			}
			if err := tx.insertLabels(ctx, ds); err != nil {
				return fmt.Errorf("write labels: %w", err)
			}
		} else {
			// The chunk's labels, by the ids of its devices: one tenant's
			// at a time, as every read of labels is.
			byTenant := map[int64][]*herd.Device{}
			for _, d := range ds {
				byTenant[d.TenantID] = append(byTenant[d.TenantID], d)
			}
			for tenantID, list := range byTenant {
				if err := tx.attachLabels(ctx, tenantID, list); err != nil {
					return err
				}
			}
		}
		if err := tx.insertSearch(ctx, ds); err != nil {
			return err
		}
		n += int64(len(ds))
		if progress != nil {
			progress(n)
		}
	}
}

// scanRows runs a query and hands each row's Scan to fn.
func scanRows(ctx context.Context, tx *Tx, q string, args []any, fn func(scan func(...any) error) error) error {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	for rows.Next() {
		if err := fn(rows.Scan); err != nil {
			rows.Close()
			return err
		}
	}
	if err := rows.Close(); err != nil {
		return err
	}
	return rows.Err()
}
