package herd

import (
	"encoding/json"
	"time"
)

// Event types written to the outbox by every state change.
const (
	EventTenantCreated = "tenant.created"
	EventNodeCreated   = "node.created"
	EventNodeMoved     = "node.moved"
	EventDeviceCreated = "device.created"
	EventDeviceMoved   = "device.moved"
	EventDeviceDeleted = "device.deleted"
	EventDevicesSeeded = "devices.seeded"
	EventUserCreated   = "user.created"
	EventTokenCreated  = "token.created"
	EventTokenDeleted  = "token.deleted"
	EventGrantCreated  = "grant.created"
	EventGrantDeleted  = "grant.deleted"
	EventSubjectTenant = "tenant"
	EventSubjectNode   = "node"
	EventSubjectDevice = "device"
	EventSubjectUser   = "user"
	EventSubjectToken  = "token"
	EventSubjectGrant  = "grant"
)

// Event is one state change, written in the same transaction as the change
// (the transactional outbox). Seq is the tenant's sequence number: it has no
// holes and never goes back, because it is taken from the tenant row inside
// that transaction. Path is the node path of the subject, so events can be
// filtered by grants like devices are.
type Event struct {
	ID          int64           `json:"id,string"`
	TenantID    int64           `json:"tenant_id,string"`
	Seq         int64           `json:"seq,string"`
	Type        string          `json:"type"`
	SubjectType string          `json:"subject_type"`
	SubjectID   int64           `json:"subject_id,string"`
	Path        string          `json:"path"`
	Payload     json.RawMessage `json:"payload"`
	CreatedAt   time.Time       `json:"created_at"`
}
