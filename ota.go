package herd

import "context"

// OTAQueue is what a gateway needs of the store to send devices their
// firmware updates again: a device that was away when its update was
// published, or that lost it, gets it on its next subscription to
// devices/{key}/ota, as a config is sent again (ConfigQueue).
type OTAQueue interface {
	// PendingOTA returns the firmware update the device should be sent:
	// its member row of an active firmware rollout (running, paused,
	// aborted or rolling back) that was told and has not answered, with
	// the rollout's firmware, or that is reverting, with the firmware the
	// device had before. It is nil when there is none, or when the
	// device's projection reports that firmware's version already (it has
	// it: success is the device coming back with the new firmware, and
	// sending it again would reboot it for nothing). When a device is a
	// told or reverting member of more than one such rollout, the newest
	// rollout decides. The device is named within its tenant.
	PendingOTA(ctx context.Context, tenantID, deviceID int64) (*OTARequest, error)
}
