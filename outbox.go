package herd

import (
	"context"
	"errors"
	"time"
)

// ErrLeaseLost says a relay no longer holds the tenant it worked on: its
// lease ran out and another relay may have taken the tenant over. The relay
// drops what it was doing for that tenant; what it published is published
// again by the new holder, and deduplicated downstream.
var ErrLeaseLost = errors.New("outbox lease lost")

// OutboxClaim is a tenant a relay holds, with the sequence number of the
// tenant's last event known to be on the bus.
type OutboxClaim struct {
	TenantID     int64
	PublishedSeq int64
}

// OutboxStats describes what waits in the outbox.
type OutboxStats struct {
	// Pending counts the committed events not yet marked published.
	Pending int64
	// Oldest is the commit time of the oldest of them; zero when none.
	Oldest time.Time
}

// OutboxService is what the relay needs of the store: the outbox is the
// events table, written in the transaction of each change, and a cursor per
// tenant that marks how far its events have reached the bus.
type OutboxService interface {
	// ClaimOutbox leases to owner up to max tenants that have unpublished
	// events and that no other live lease holds, and renews owner's leases
	// on the tenants it returns, those whose lease is oldest first.
	// Tenants come in id order.
	ClaimOutbox(ctx context.Context, owner string, lease time.Duration, max int) ([]OutboxClaim, error)
	// OutboxEvents returns a tenant's committed events with seq > after,
	// in sequence order, at most limit of them.
	OutboxEvents(ctx context.Context, tenantID, after int64, limit int) ([]*Event, error)
	// MarkPublished moves the tenant's cursor to seq and renews the lease,
	// if owner still holds it; otherwise it returns ErrLeaseLost.
	MarkPublished(ctx context.Context, owner string, tenantID, seq int64, lease time.Duration) error
	// ReleaseOutbox gives up owner's leases so another relay may take the
	// tenants at once (on a clean shutdown).
	ReleaseOutbox(ctx context.Context, owner string) error
	// OutboxStats counts what is waiting.
	OutboxStats(ctx context.Context) (OutboxStats, error)
}

// EventBus carries committed events to their consumers. Publish returns
// once the bus has stored every event (or says which it could not): a
// relay marks events published only after that. The bus deduplicates
// by event id within a window, which is a help, not the guarantee.
type EventBus interface {
	// Publish stores events in order, each under its id. duplicates
	// counts those the bus already had.
	Publish(ctx context.Context, evs []*Event) (duplicates int, err error)
}

// AckedEvent is an event handed to an app that must acknowledge it: until
// Ack, the feed hands it out again (Attempt counts the earlier tries).
type AckedEvent struct {
	Event   *Event
	Attempt int
	Ack     func() error
}

// AckedFeed is one app's stream of events to acknowledge.
type AckedFeed interface {
	// Next waits for the next event, or ctx's end.
	Next(ctx context.Context) (*AckedEvent, error)
	Close()
}

// AppEventSource opens the feeds of apps: durable, so events committed
// while an app is away wait for it, and shared by the app's connections.
type AppEventSource interface {
	OpenAppFeed(ctx context.Context, app string, tenantID int64, ackWait time.Duration) (AckedFeed, error)
}
