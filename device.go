package herd

import (
	"context"
	"strings"
	"time"
)

// Device status values: the health a device last reported in its
// telemetry. Status is only ever what the device said (empty until it says
// anything); whether it is connected is Online, with LastSeen, and a connect
// or disconnect never touches Status. An operator filtering status:eq:warn
// so finds every device whose last report was warn, connected or not, and
// online:eq:false every device that is away, whatever it last reported.
const (
	StatusOK    = "ok"
	StatusWarn  = "warn"
	StatusAlarm = "alarm"
	// StatusOffline is no longer a status: connectivity is Device.Online.
	// ValidStatus refuses it, and no device is given it.
	//
	// Deprecated: use Device.Online.
	StatusOffline = "offline"
)

// ValidStatus reports whether s is a status a device may report.
func ValidStatus(s string) bool {
	switch s {
	case StatusOK, StatusWarn, StatusAlarm:
		return true
	}
	return false
}

// Device is a device and its latest-state projection: one row per device
// with typed columns, carrying the path of its node so that a scoped query
// reads this one table. Readings are nil until a device reports them.
type Device struct {
	ID            int64      `json:"id,string"`
	TenantID      int64      `json:"tenant_id,string"`
	NodeID        int64      `json:"node_id,string"`
	Path          string     `json:"path"`
	Key           string     `json:"key"`
	Name          string     `json:"name"`
	Model         string     `json:"model"`
	Firmware      string     `json:"firmware"`
	Status        string     `json:"status"`
	Online        bool       `json:"online"`
	LastSeen      *time.Time `json:"last_seen"`
	Temperature   *float64   `json:"temperature"`
	Humidity      *float64   `json:"humidity"`
	Pressure      *float64   `json:"pressure"`
	Voltage       *float64   `json:"voltage"`
	Current       *float64   `json:"current"`
	Power         *float64   `json:"power"`
	Battery       *float64   `json:"battery"`
	RSSI          *int64     `json:"rssi"`
	UptimeS       *int64     `json:"uptime_s"`
	ErrorCount    int64      `json:"error_count"`
	ConfigVersion int64      `json:"config_version"`
	CreatedAt     time.Time  `json:"created_at"`
	// Version counts the changes of the device's metadata (see
	// CheckVersion); telemetry and moves leave it alone.
	Version int64 `json:"version"`
	// Labels are the device's labels (see MaxLabels): always an object in
	// JSON, {} when it has none.
	Labels map[string]string `json:"labels"`
}

// Validate reports whether the device can be created. A new device starts
// offline (Online false) with the status it is given, empty by default: it
// has reported nothing yet.
func (d *Device) Validate() error {
	d.Key = strings.TrimSpace(d.Key)
	d.Name = strings.TrimSpace(d.Name)
	if d.NodeID == 0 {
		return Errorf(EINVALID, "node_id is required")
	}
	for _, f := range []struct {
		name     string
		value    string
		max      int
		required bool
	}{
		{"key", d.Key, MaxDeviceKey, true},
		{"name", d.Name, MaxNameLen, false},
		{"model", d.Model, MaxModelLen, false},
		{"firmware", d.Firmware, MaxFirmwareLen, false},
	} {
		check := CheckText
		if f.required {
			check = checkRequiredText
		}
		if err := check(f.name, f.value, f.max); err != nil {
			return err
		}
	}
	if strings.ContainsAny(d.Key, "/+# ") {
		// The key is the device's MQTT client id and a topic level.
		return Errorf(EINVALID, "key %q may not contain '/', '+', '#' or spaces", d.Key)
	}
	if d.Name == "" {
		d.Name = d.Key
	}
	if d.Labels == nil {
		d.Labels = map[string]string{}
	} else if err := CheckLabels(d.Labels); err != nil {
		return err
	}
	if d.Status != "" && !ValidStatus(d.Status) {
		return Errorf(EINVALID, "status must be ok, warn or alarm, or empty (whether a device is connected is online, not a status)")
	}
	return nil
}

// MaxBatchDevices bounds one batch create.
const MaxBatchDevices = 10000

// DeviceService manages devices and answers the scoped device query.
type DeviceService interface {
	// CreateDevices creates all the devices or none, each with its event.
	// Returns EFORBIDDEN unless the actor is an admin of every target node,
	// ECONFLICT when a key is taken.
	CreateDevices(ctx context.Context, ds []*Device) error
	// FindDeviceByID returns ENOTFOUND when the device does not exist or is
	// outside the actor's grants.
	FindDeviceByID(ctx context.Context, id int64) (*Device, error)
	// MoveDevice moves a device to another node of its tenant.
	MoveDevice(ctx context.Context, id, nodeID int64) (*Device, error)
	// UpdateDevice changes a device's name or model and returns it as it
	// now is. Returns ENOTFOUND outside the actor's grants, EFORBIDDEN
	// without the admin role on it, EINVALID for a bad value, EPRECONDITION
	// for a stale u.IfVersion.
	UpdateDevice(ctx context.Context, id int64, u DeviceUpdate) (*Device, error)
	// DeleteDevice deletes a device.
	DeleteDevice(ctx context.Context, id int64) error
	// QueryDevices returns one page of the devices under the actor's grants
	// that match q, and a capped count of all of them.
	QueryDevices(ctx context.Context, q DeviceQuery) (*DevicePage, error)
}
