package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"

	"github.com/herd-iot/herd"
)

var _ herd.ConfigQueue = (*ConfigService)(nil)

// configReported is the payload of a device.config_reported event.
type configReported struct {
	DeviceID int64  `json:"device_id,string"`
	Version  int64  `json:"version"`
	Status   string `json:"status"`
	Error    string `json:"error,omitempty"`
}

// otaProgress is the payload of a device.ota_progress event.
type otaProgress struct {
	DeviceID int64 `json:"device_id,string"`
	herd.OTAProgress
}

// applyConfigAcks records devices' answers to their configs, in the ingest
// transaction. An answer the device gave already (the same version,
// status and error: a retry after a lost PUBACK, or the device answering
// a config sent again) changes nothing and writes no event. An applied
// version becomes the projection's config_version.
func (tx *Tx) applyConfigAcks(ctx context.Context, items []*herd.IngestItem, rev int64) ([]*herd.Event, error) {
	var evs []*herd.Event
	for _, it := range items {
		a := it.ConfigAck
		var version sql.NullInt64
		var status sql.NullString
		var rerr string
		err := tx.QueryRowContext(ctx, `SELECT reported_version, reported_status, reported_error FROM device_configs WHERE device_id = ? AND tenant_id = ?`, it.DeviceID, it.TenantID).Scan(&version, &status, &rerr)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("config ack: %w", err)
		}
		if err == nil && version.Int64 == a.Version && status.String == a.Status && rerr == a.Error {
			continue
		}
		var path string
		if a.Status == herd.ConfigApplied {
			err = tx.QueryRowContext(ctx, `UPDATE devices SET config_version = ?, rev = ? WHERE id = ? AND tenant_id = ? RETURNING path`, a.Version, rev, it.DeviceID, it.TenantID).Scan(&path)
		} else {
			err = tx.QueryRowContext(ctx, `SELECT path FROM devices WHERE id = ? AND tenant_id = ?`, it.DeviceID, it.TenantID).Scan(&path)
		}
		if errors.Is(err, sql.ErrNoRows) {
			continue // deleted since it answered
		} else if err != nil {
			return nil, fmt.Errorf("config ack: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO device_configs (device_id, tenant_id, reported_version, reported_status, reported_error, reported_at) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (device_id) DO UPDATE SET reported_version = excluded.reported_version, reported_status = excluded.reported_status, reported_error = excluded.reported_error, reported_at = excluded.reported_at`,
			it.DeviceID, it.TenantID, a.Version, a.Status, a.Error, it.At); err != nil {
			return nil, fmt.Errorf("config ack: %w", err)
		}
		ev := newEvent(herd.EventDeviceConfigReported, herd.EventSubjectDevice, it.DeviceID, path, configReported{DeviceID: it.DeviceID, Version: a.Version, Status: a.Status, Error: a.Error})
		ev.TenantID = it.TenantID
		evs = append(evs, ev)
	}
	return evs, nil
}

// applyOTAProgress turns devices' firmware progress into events, and
// records it on the device's member rows for the rollout controller.
func (tx *Tx) applyOTAProgress(ctx context.Context, items []*herd.IngestItem) ([]*herd.Event, error) {
	var evs []*herd.Event
	for _, it := range items {
		var path string
		err := tx.QueryRowContext(ctx, `SELECT path FROM devices WHERE id = ? AND tenant_id = ?`, it.DeviceID, it.TenantID).Scan(&path)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("ota progress: %w", err)
		}
		if err := tx.recordOTAProgress(ctx, it); err != nil {
			return nil, err
		}
		ev := newEvent(herd.EventDeviceOTAProgress, herd.EventSubjectDevice, it.DeviceID, path, otaProgress{DeviceID: it.DeviceID, OTAProgress: it.OTA})
		ev.TenantID = it.TenantID
		evs = append(evs, ev)
	}
	return evs, nil
}

// recordOTAProgress sets the progress on the member rows waiting for the
// device's firmware: told or reverting, of an active firmware rollout of
// the tenant, and of the rollout the report names when it names one. A
// failure also keeps the device's error. Only the controller moves a
// member's state; this is what it reads. A report older than the one
// recorded (ota_at) changes nothing, so a repeated report at most moves
// ota_at to its own, later, arrival.
func (tx *Tx) recordOTAProgress(ctx context.Context, it *herd.IngestItem) error {
	p := &it.OTA
	set, args := `ota_state = ?, ota_at = ?`, []any{p.State, it.At}
	if p.State == herd.OTAFailed {
		set, args = set+`, error = ?`, append(args, p.Error)
	}
	q := `UPDATE rollout_members SET ` + set + `
WHERE tenant_id = ? AND device_id = ? AND state IN ` + otaMemberStates + ` AND (ota_at IS NULL OR ota_at <= ?)
  AND rollout_id IN (SELECT id FROM rollouts WHERE tenant_id = ? AND kind = '` + herd.RolloutFirmware + `' AND state IN ` + otaActiveStates + `)`
	args = append(args, it.TenantID, it.DeviceID, it.At, it.TenantID)
	if p.RolloutID != "" {
		id, err := strconv.ParseInt(p.RolloutID, 10, 64)
		if err != nil {
			// ParseOTAProgress lets only an id through; anything else
			// names no rollout, and so no member row.
			return nil
		}
		q, args = q+` AND rollout_id = ?`, append(args, id)
	}
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("ota progress: member: %w", err)
	}
	return nil
}

// PendingConfig implements herd.ConfigQueue: the gateway's read, on a
// device's subscription, of the config it should be sent.
func (s *ConfigService) PendingConfig(ctx context.Context, tenantID, deviceID int64) (_ *herd.ConfigDesiredEvent, err error) {
	defer wrapOp("sqldb.PendingConfig", &err)
	tx, err := s.db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	c := &herd.ConfigDesiredEvent{DeviceID: deviceID}
	var doc string
	var reported sql.NullInt64
	var status sql.NullString
	err = tx.QueryRowContext(ctx, `SELECT d.key, p.id, p.name, v.version, v.document, c.reported_version, c.reported_status
FROM device_configs c
JOIN devices d ON d.id = c.device_id AND d.tenant_id = c.tenant_id
JOIN config_profiles p ON p.id = c.profile_id AND p.tenant_id = c.tenant_id
JOIN config_versions v ON v.profile_id = c.profile_id AND v.version = c.desired_version AND v.tenant_id = c.tenant_id
WHERE c.device_id = ? AND c.tenant_id = ?`, deviceID, tenantID).Scan(&c.DeviceKey, &c.ProfileID, &c.Profile, &c.Version, &doc, &reported, &status)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	if reported.Valid && reported.Int64 == c.Version && status.String == herd.ConfigApplied {
		return nil, nil
	}
	c.Document = []byte(doc)
	return c, nil
}
