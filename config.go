package herd

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"time"
)

// Event types of configuration.
const (
	EventConfigProfileCreated = "config_profile.created"
	EventConfigVersionCreated = "config_version.created"
	EventDeviceConfigDesired  = "device.config_desired"
	EventDeviceConfigReported = "device.config_reported"
	EventSubjectConfigProfile = "config_profile"
)

// Limits of configuration.
const (
	// MaxConfigSchema and MaxConfigDocument bound a profile's schema and
	// one version's document, in bytes of JSON: a document goes to the
	// device whole, in one MQTT message.
	MaxConfigSchema   = 64 << 10
	MaxConfigDocument = 64 << 10
)

// Reported config statuses.
const (
	ConfigApplied  = "applied"
	ConfigRejected = "rejected"
)

// ConfigProfile is a named JSON Schema (draft 2020-12) of a tenant: every
// version of the profile is a document that validates against it. A
// profile belongs to the whole tenant, as users do: anyone who sees a node
// of the tenant may read it, and admins of the tenant's root create them.
type ConfigProfile struct {
	ID       int64           `json:"id,string"`
	TenantID int64           `json:"tenant_id,string"`
	Name     string          `json:"name"`
	Schema   json.RawMessage `json:"schema"`
	// LatestVersion is the number of the newest version, 0 before the first.
	LatestVersion int64     `json:"latest_version"`
	CreatedAt     time.Time `json:"created_at"`
}

// Validate reports whether the profile can be created, but for its
// schema compiling, which is the schema engine's to say (package
// configschema).
func (p *ConfigProfile) Validate() error {
	p.Name = strings.TrimSpace(p.Name)
	if p.TenantID == 0 {
		return Errorf(EINVALID, "tenant_id is required")
	}
	if err := checkRequiredText("name", p.Name, MaxNameLen); err != nil {
		return err
	}
	if t := bytes.TrimSpace(p.Schema); len(t) == 0 || string(t) == "null" {
		return Errorf(EINVALID, "schema is required: a JSON Schema (draft 2020-12)")
	} else if len(p.Schema) > MaxConfigSchema {
		return Errorf(EINVALID, "schema is %d bytes, at most %d", len(p.Schema), MaxConfigSchema)
	}
	// The store keeps the schema as text (PostgreSQL refuses what is not
	// UTF-8), and a JSON decoder would quietly mend bad bytes.
	return CheckText("schema", string(p.Schema), MaxConfigSchema)
}

// ConfigVersion is one immutable document of a profile, numbered 1, 2, …
// in the order they were created.
type ConfigVersion struct {
	ProfileID int64           `json:"profile_id,string"`
	TenantID  int64           `json:"tenant_id,string"`
	Version   int64           `json:"version"`
	Document  json.RawMessage `json:"document"`
	CreatedAt time.Time       `json:"created_at"`
}

// DesiredConfig is the config version a device should run.
type DesiredConfig struct {
	ProfileID int64     `json:"profile_id,string"`
	Version   int64     `json:"version"`
	At        time.Time `json:"at"`
}

// ReportedConfig is the device's last answer about its config.
type ReportedConfig struct {
	Version int64     `json:"version"`
	Status  string    `json:"status"`
	Error   string    `json:"error,omitempty"`
	At      time.Time `json:"at"`
}

// DeviceConfig is a device's desired and reported config. InSync is true
// when the device applied the version it is meant to run (or nothing is
// desired of it).
type DeviceConfig struct {
	DeviceID int64           `json:"device_id,string"`
	Desired  *DesiredConfig  `json:"desired"`
	Reported *ReportedConfig `json:"reported"`
	InSync   bool            `json:"in_sync"`
}

// ComputeInSync sets InSync from Desired and Reported.
func (c *DeviceConfig) ComputeInSync() {
	c.InSync = c.Desired == nil || (c.Reported != nil && c.Reported.Status == ConfigApplied && c.Reported.Version == c.Desired.Version)
}

// ConfigPage is a page of a keyset-paged list: Next, when set, is the
// after= of the next page.
type ConfigPage[T any] struct {
	Items []T   `json:"items"`
	Next  int64 `json:"next,string,omitempty"`
}

// ConfigService manages config profiles, their versions and devices'
// desired configs.
type ConfigService interface {
	// CreateConfigProfile returns EFORBIDDEN unless the actor is an admin
	// of the tenant's root node, ECONFLICT when the name is taken in the
	// tenant.
	CreateConfigProfile(ctx context.Context, p *ConfigProfile) error
	// FindConfigProfileByID returns ENOTFOUND unless the actor sees a node
	// of the profile's tenant.
	FindConfigProfileByID(ctx context.Context, id int64) (*ConfigProfile, error)
	// FindConfigProfiles lists a tenant's profiles in id order, those
	// after the id given.
	FindConfigProfiles(ctx context.Context, tenantID, after int64, limit int) (*ConfigPage[*ConfigProfile], error)
	// CreateConfigVersion validates the document against the profile's
	// schema and stores it as the profile's next version.
	CreateConfigVersion(ctx context.Context, v *ConfigVersion) error
	FindConfigVersion(ctx context.Context, profileID, version int64) (*ConfigVersion, error)
	// FindConfigVersions lists a profile's versions, those after the
	// version given, in version order.
	FindConfigVersions(ctx context.Context, profileID, after int64, limit int) (*ConfigPage[*ConfigVersion], error)
	// FindDeviceConfig is authorised as reading the device is.
	FindDeviceConfig(ctx context.Context, deviceID int64) (*DeviceConfig, error)
	// SetDesiredConfig sets one device's desired config (operator role on
	// its node). The version must be of a profile of the device's tenant.
	SetDesiredConfig(ctx context.Context, deviceID, profileID, version int64) (*DeviceConfig, error)
}

// ConfigDesiredEvent is the payload of a device.config_desired event: all
// a gateway needs to send the device its config from the event alone.
type ConfigDesiredEvent struct {
	DeviceID  int64           `json:"device_id,string"`
	DeviceKey string          `json:"device_key"`
	ProfileID int64           `json:"profile_id,string"`
	Profile   string          `json:"profile"`
	Version   int64           `json:"version"`
	Document  json.RawMessage `json:"document"`
}
