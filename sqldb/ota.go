package sqldb

import (
	"context"
	"database/sql"
	"errors"

	"github.com/herd-iot/herd"
)

var _ herd.OTAQueue = (*ConfigService)(nil)

// otaActiveStates are the states of a firmware rollout whose told and
// reverting members still wait for their update: a paused rollout tells
// no one new, but those it told already may still be downloading, and a
// device that missed the publish must get it again to answer at all. A
// rollout that ended — aborted with on_abort stop, cancelled, done — sends
// nothing more: stopping means no device is asked again.
const otaActiveStates = `('` + herd.RolloutRunning + `', '` + herd.RolloutPaused + `', '` + herd.RolloutRollingBack + `')`

// otaMemberStates are the member states that wait for a firmware update:
// told waits for the rollout's firmware, reverting for the one it had.
const otaMemberStates = `('` + herd.MemberTold + `', '` + herd.MemberReverting + `')`

// PendingOTA implements herd.OTAQueue: the gateway's read, on a device's
// subscription to its ota topic, of the firmware update it should be sent.
// Every table is held to the tenant, so a device of another tenant is
// none of this one's.
func (s *ConfigService) PendingOTA(ctx context.Context, tenantID, deviceID int64) (_ *herd.OTARequest, err error) {
	defer wrapOp("sqldb.PendingOTA", &err)
	tx, err := s.db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	r := &herd.OTARequest{DeviceID: deviceID}
	fw := &r.Firmware
	var has string
	var created int64
	err = tx.QueryRowContext(ctx, `SELECT d.key, d.firmware, r.id, f.id, f.tenant_id, f.model, f.version, f.url, f.sha256, f.size, f.created_at
FROM rollout_members m
JOIN rollouts r ON r.id = m.rollout_id AND r.tenant_id = m.tenant_id
JOIN devices d ON d.id = m.device_id AND d.tenant_id = m.tenant_id
JOIN firmware f ON f.tenant_id = m.tenant_id AND f.id = CASE WHEN m.state = '`+herd.MemberTold+`' THEN r.firmware_id ELSE m.prev_firmware_id END
WHERE m.device_id = ? AND m.tenant_id = ? AND r.tenant_id = ? AND d.tenant_id = ? AND f.tenant_id = ?
  AND m.state IN `+otaMemberStates+` AND r.kind = '`+herd.RolloutFirmware+`' AND r.state IN `+otaActiveStates+`
ORDER BY r.id DESC
LIMIT 1`, deviceID, tenantID, tenantID, tenantID, tenantID).Scan(
		&r.DeviceKey, &has, &r.RolloutID, &fw.ID, &fw.TenantID, &fw.Model, &fw.Version, &fw.URL, &fw.SHA256, &fw.Size, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	if has == fw.Version {
		return nil, nil
	}
	fw.CreatedAt = msToTime(created)
	return r, nil
}
