package sqldb

import (
	"context"
	"database/sql"
	"errors"

	"github.com/herd-iot/herd"
)

// findDeviceConfig reads a device's config row; a device never configured
// has neither desired nor reported config.
func (tx *Tx) findDeviceConfig(ctx context.Context, d *herd.Device) (*herd.DeviceConfig, error) {
	c := &herd.DeviceConfig{DeviceID: d.ID}
	var profile, desired, desiredAt, reported, reportedAt sql.NullInt64
	var status sql.NullString
	var rerr string
	err := tx.QueryRowContext(ctx, `SELECT profile_id, desired_version, desired_at, reported_version, reported_status, reported_error, reported_at FROM device_configs WHERE device_id = ? AND tenant_id = ?`, d.ID, d.TenantID).
		Scan(&profile, &desired, &desiredAt, &reported, &status, &rerr, &reportedAt)
	if errors.Is(err, sql.ErrNoRows) {
		c.ComputeInSync()
		return c, nil
	} else if err != nil {
		return nil, err
	}
	if profile.Valid && desired.Valid {
		c.Desired = &herd.DesiredConfig{ProfileID: profile.Int64, Version: desired.Int64, At: msToTime(desiredAt.Int64)}
	}
	if reported.Valid {
		c.Reported = &herd.ReportedConfig{Version: reported.Int64, Status: status.String, Error: rerr, At: msToTime(reportedAt.Int64)}
	}
	c.ComputeInSync()
	return c, nil
}

// FindDeviceConfig implements herd.ConfigService.
func (s *ConfigService) FindDeviceConfig(ctx context.Context, deviceID int64) (_ *herd.DeviceConfig, err error) {
	defer wrapOp("sqldb.FindDeviceConfig", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.DeviceConfig, error) {
		d, err := tx.findDevice(ctx, a, deviceID, herd.RoleViewer)
		if err != nil {
			return nil, err
		}
		return tx.findDeviceConfig(ctx, d)
	})
}

// SetDesiredConfig implements herd.ConfigService. Setting the config the
// device is already meant to run changes nothing and writes no event.
func (s *ConfigService) SetDesiredConfig(ctx context.Context, deviceID, profileID, version int64) (_ *herd.DeviceConfig, err error) {
	defer wrapOp("sqldb.SetDesiredConfig", &err)
	a, err := actor(ctx)
	if err != nil {
		return nil, err
	}
	if profileID <= 0 {
		return nil, herd.Errorf(herd.EINVALID, "profile_id is required")
	} else if version <= 0 {
		return nil, herd.Errorf(herd.EINVALID, "version must be a version number of the profile, 1 or more")
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	d, err := tx.findDevice(ctx, a, deviceID, herd.RoleOperator)
	if err != nil {
		return nil, err
	}
	// The profile must be of the device's tenant, whoever asks: a
	// super-admin cannot give a device another tenant's config.
	p, err := scanProfile(tx.QueryRowContext(ctx, `SELECT `+profileColumns+` FROM config_profiles WHERE id = ? AND tenant_id = ?`, profileID, d.TenantID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, herd.Errorf(herd.ENOTFOUND, "config profile %d not found", profileID)
	} else if err != nil {
		return nil, err
	}
	v, err := tx.findVersion(ctx, d.TenantID, p.ID, version)
	if err != nil {
		return nil, err
	}
	cur, err := tx.findDeviceConfig(ctx, d)
	if err != nil {
		return nil, err
	}
	if cur.Desired != nil && cur.Desired.ProfileID == p.ID && cur.Desired.Version == v.Version {
		return cur, nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO device_configs (device_id, tenant_id, profile_id, desired_version, desired_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (device_id) DO UPDATE SET profile_id = excluded.profile_id, desired_version = excluded.desired_version, desired_at = excluded.desired_at`,
		d.ID, d.TenantID, p.ID, v.Version, tx.now.UnixMilli()); err != nil {
		return nil, err
	}
	payload := herd.ConfigDesiredEvent{DeviceID: d.ID, DeviceKey: d.Key, ProfileID: p.ID, Profile: p.Name, Version: v.Version, Document: v.Document}
	if err := tx.appendEvents(ctx, d.TenantID, newEvent(herd.EventDeviceConfigDesired, herd.EventSubjectDevice, d.ID, d.Path, payload)); err != nil {
		return nil, err
	}
	cur.Desired = &herd.DesiredConfig{ProfileID: p.ID, Version: v.Version, At: tx.now}
	cur.ComputeInSync()
	return cur, tx.Commit()
}
