package herd

import (
	"context"
	"encoding/json"
	"time"
)

// Event types written to the outbox by every state change.
const (
	EventTenantCreated = "tenant.created"
	EventTenantUpdated = "tenant.updated"
	EventNodeCreated   = "node.created"
	EventNodeMoved     = "node.moved"
	EventNodeUpdated   = "node.updated"
	EventDeviceCreated = "device.created"
	EventDeviceMoved   = "device.moved"
	EventDeviceUpdated = "device.updated"
	EventDeviceDeleted = "device.deleted"
	EventDevicesSeeded = "devices.seeded"
	EventUserCreated   = "user.created"
	EventUserUpdated   = "user.updated"
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
	// EventIDHeadroomWarning says a table of herd's own store used more of
	// its id range than the warn level; its subject is the store.
	EventIDHeadroomWarning = "store.id_headroom_warning"
	EventSubjectStore      = "store"
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

// Limits of the event log.
const (
	// MaxEventsPage is the most events one page of the log returns.
	MaxEventsPage = 1000
	// EventsScanWindow is the most sequence numbers one page looks at:
	// a caller who sees few of a tenant's events moves on by at most
	// this much per page, so a page never scans the whole log.
	EventsScanWindow = 10000
)

// EventPage is a page of a tenant's event log as one caller sees it.
type EventPage struct {
	Items []*Event `json:"items"`
	// Head is the tenant's last committed sequence number.
	Head int64 `json:"head,string"`
	// NextAfter is the after of the next page: the last event returned,
	// or, when the caller may see none of the rest of the window, its end.
	NextAfter int64 `json:"next_after,string"`
}

// EventService reads the event log: the truth that hints point to.
type EventService interface {
	// FindEvents returns, in sequence order, the events of the tenant with
	// seq > after that the actor may see (by the node path of their
	// subject). An after older than the retention horizon, or past the
	// head, is ERESYNC; an after below 0 asks for the head only (an empty
	// page whose NextAfter is the head).
	FindEvents(ctx context.Context, tenantID, after int64, limit int) (*EventPage, error)
}
