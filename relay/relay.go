// Package relay moves committed events from the store's outbox to the event
// bus. Every state change writes its event in its own transaction; the relay
// publishes those events, tenant by tenant in sequence order, each under its
// event id, and marks them published only once the bus has acknowledged
// them. It can die between the two: the next holder of the tenant publishes
// them again, and the bus (within its window) or the consumers drop the
// repeats. That is at-least-once delivery, made once in effect downstream.
//
// Several relays may run against one store, in one process or many: a relay
// holds the tenants it works on by a lease in the store, so each tenant has
// one relay at a time and its order holds; a relay that stops renewing
// loses its tenants to the others when the lease runs out.
package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"time"

	"github.com/herd-iot/herd"
)

// Defaults.
const (
	DefaultLease      = 15 * time.Second
	DefaultPoll       = 100 * time.Millisecond
	DefaultBatch      = 1000
	DefaultMaxTenants = 64
	// MaxBackoff caps the wait between attempts to publish after a failure.
	MaxBackoff = 5 * time.Second
)

// Relay publishes the outbox. Create it with New, set its fields, then Run.
type Relay struct {
	Store herd.OutboxService
	Bus   herd.EventBus
	// Owner names this relay in the leases: unique per relay.
	Owner string
	// Lease is how long a tenant stays held without the relay renewing it;
	// it bounds how long a dead relay's tenants wait for another.
	Lease time.Duration
	// Poll is how often the relay looks for events committed by other
	// processes; Wake (if set) wakes it at once for this process's commits.
	Poll time.Duration
	Wake <-chan struct{}
	// Batch is the most events published at once.
	Batch int
	// MaxTenants is the most tenants claimed at once.
	MaxTenants int
	Logger     *slog.Logger

	metrics *metrics

	// afterPublish, in tests, runs between the bus's acknowledgement and the
	// mark: where a crash leaves events published but not marked.
	afterPublish func(tenantID int64, evs []*herd.Event)
}

// New returns a relay with the defaults and a unique owner name.
func New(store herd.OutboxService, bus herd.EventBus) *Relay {
	host, _ := os.Hostname()
	var b [4]byte
	rand.Read(b[:])
	return &Relay{
		Store:      store,
		Bus:        bus,
		Owner:      fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:])),
		Lease:      DefaultLease,
		Poll:       DefaultPoll,
		Batch:      DefaultBatch,
		MaxTenants: DefaultMaxTenants,
		Logger:     slog.New(slog.DiscardHandler),
		metrics:    newMetrics(),
	}
}

// Run publishes until ctx ends, then gives up its leases so that another
// relay may go on at once.
func (r *Relay) Run(ctx context.Context) error {
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := r.Store.ReleaseOutbox(rctx, r.Owner); err != nil {
			r.Logger.Warn("outbox leases not released; they run out by themselves", "err", err)
		}
	}()
	poll := time.NewTimer(0)
	defer poll.Stop()
	var failures int
	for {
		worked, err := r.round(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := r.Poll
		switch {
		case err != nil:
			failures++
			// Full jitter: relays that failed together do not retry together.
			wait = time.Duration(mrand.Int64N(int64(min(50*time.Millisecond<<min(failures, 10), MaxBackoff)) + 1))
			r.Logger.Warn("outbox relay round failed; retrying", "err", err, "failures", failures, "retry_in", wait)
		case worked:
			failures = 0
			continue
		default:
			failures = 0
		}
		poll.Reset(wait)
		wake := r.Wake
		if err != nil {
			wake = nil // a commit does not cure a failing bus: keep the backoff
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-poll.C:
		case <-wake:
		}
	}
}

// round claims tenants and publishes what they have, a batch at a time,
// until they have nothing more or the round's time is up. It reports
// whether it published anything.
func (r *Relay) round(ctx context.Context) (bool, error) {
	claims, err := r.Store.ClaimOutbox(ctx, r.Owner, r.Lease, r.MaxTenants)
	if err != nil {
		return false, err
	}
	// A round stays well inside the lease: the mark after each batch
	// renews it, but a round must also end so that new tenants get claimed.
	deadline := time.Now().Add(r.Lease / 3)
	worked := false
	var errs []error
	for _, c := range claims {
		n, err := r.drain(ctx, c, deadline)
		worked = worked || n > 0
		if errors.Is(err, herd.ErrLeaseLost) {
			r.metrics.leaseLost.Inc()
			r.Logger.Info("outbox tenant taken over by another relay", "tenant", c.TenantID)
			continue
		} else if err != nil {
			errs = append(errs, fmt.Errorf("tenant %d: %w", c.TenantID, err))
			if ctx.Err() != nil {
				break
			}
		}
	}
	return worked, errors.Join(errs...)
}

// drain publishes one tenant's events after its cursor, batch by batch.
func (r *Relay) drain(ctx context.Context, c herd.OutboxClaim, deadline time.Time) (int, error) {
	cursor, total := c.PublishedSeq, 0
	for {
		evs, err := r.Store.OutboxEvents(ctx, c.TenantID, cursor, r.Batch)
		if err != nil || len(evs) == 0 {
			return total, err
		}
		start := time.Now()
		dups, err := r.Bus.Publish(ctx, evs)
		if err != nil {
			r.metrics.publishErrors.Inc()
			return total, fmt.Errorf("publish: %w", err)
		}
		acked := time.Now()
		r.metrics.publishSeconds.Observe(acked.Sub(start).Seconds())
		if r.afterPublish != nil {
			r.afterPublish(c.TenantID, evs)
		}
		last := evs[len(evs)-1].Seq
		if err := r.Store.MarkPublished(ctx, r.Owner, c.TenantID, last, r.Lease); err != nil {
			return total, err
		}
		for _, ev := range evs {
			r.metrics.commitToAck.Observe(acked.Sub(ev.CreatedAt).Seconds())
		}
		r.metrics.published.Add(float64(len(evs)))
		r.metrics.duplicates.Add(float64(dups))
		cursor, total = last, total+len(evs)
		if len(evs) < r.Batch || time.Now().After(deadline) {
			return total, nil
		}
	}
}
