package herd

import (
	"context"
	"time"
)

// The device edge: how devices authenticate to the MQTT gateway and how what
// they send reaches the store.

// Event types of the device edge.
const (
	EventDeviceOnline            = "device.online"
	EventDeviceOffline           = "device.offline"
	EventDeviceCredentialCreated = "device.credential_created"
	EventDeviceCredentialDeleted = "device.credential_deleted"
	// EventDeviceReported is what a device published on its events topic
	// (a door opened, a fault raised): the payload carries its JSON object
	// as "data".
	EventDeviceReported = "device.reported"
)

// DeviceCredential is the secret a device presents as its MQTT password, with
// its key as client id and user name. The token is shown once, when made; the
// store keeps its hash. A device has at most one: a new one replaces the old.
type DeviceCredential struct {
	DeviceID  int64     `json:"device_id,string"`
	TenantID  int64     `json:"tenant_id,string"`
	Key       string    `json:"key"`
	Token     string    `json:"token,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// DeviceIdentity is what the gateway knows of an authenticated device.
type DeviceIdentity struct {
	DeviceID int64
	TenantID int64
	Key      string
}

// CredentialService issues, revokes and checks device credentials.
type CredentialService interface {
	// CreateDeviceCredential makes a new credential for the device,
	// replacing any it had, and returns it with its token. Requires the
	// admin role on the device's node.
	CreateDeviceCredential(ctx context.Context, deviceID int64) (*DeviceCredential, error)
	// DeleteDeviceCredential revokes the device's credential. ENOTFOUND when
	// it has none.
	DeleteDeviceCredential(ctx context.Context, deviceID int64) error
	// AuthenticateDevice returns the device whose key and token these are,
	// or EUNAUTHORIZED. It needs no actor: the credential is the authority.
	AuthenticateDevice(ctx context.Context, key, token string) (*DeviceIdentity, error)
}

// IngestKind says what an IngestItem records.
type IngestKind uint8

// Ingest item kinds.
const (
	IngestReading     IngestKind = iota + 1 // a telemetry reading
	IngestConnect                           // the device connected
	IngestDisconnect                        // the device's connection ended, cleanly or not
	IngestEvent                             // the device reported an event
	IngestCommandAck                        // the device answered a command
	IngestConfigAck                         // the device answered a config
	IngestOTAProgress                       // the device reported firmware progress
)

// IngestItem is one thing a device did, on its way to the store.
type IngestItem struct {
	Kind     IngestKind
	DeviceID int64
	TenantID int64
	At       int64   // arrival, unix milliseconds
	Reading  Reading // for IngestReading
	// Data is the event's JSON object, for IngestEvent, as ParseDeviceEvent
	// returns it.
	Data []byte
	// Ack is the device's answer to a command, for IngestCommandAck.
	Ack CommandAck
	// ConfigAck is the device's answer to a config, for IngestConfigAck;
	// OTA its firmware progress, for IngestOTAProgress.
	ConfigAck ConfigAck
	OTA       OTAProgress
}

// IngestService stores what devices send.
type IngestService interface {
	// Ingest commits the items in one transaction: readings into the
	// history and, when newest, into the latest-state projection; connects
	// and disconnects into online and last_seen (never status, which is
	// only what the device reported), with a device.online or
	// device.offline event when online changes; device
	// events into device.reported events, moving last_seen. A device that
	// no longer exists gets no projection, state or event; its readings
	// still go into the history (ids are never reused, and a deleted
	// device's history stays there like the rest of it). Either all items are
	// stored or, on error, none.
	Ingest(ctx context.Context, items []IngestItem) error
}
