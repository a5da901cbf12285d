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
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/owner"
)

// Defaults.
const (
	DefaultLease      = 15 * time.Second
	DefaultPoll       = 100 * time.Millisecond
	DefaultBatch      = 1000
	DefaultMaxTenants = 64
	DefaultMarkEvery  = 10 * time.Millisecond
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
	// MarkEvery is the least time between two marks of published events.
	MarkEvery time.Duration
	// MarkDelay holds a batch's mark until the stream has had it this
	// long: for a stream that writes to disk every so often rather than
	// before it acknowledges (the embedded server syncs every second), so
	// that a power cut cannot lose events already marked published.
	MarkDelay time.Duration
	Logger    *slog.Logger

	metrics  *metrics
	mu       sync.Mutex
	held     map[int64]*held
	markKick chan struct{}

	// afterPublish, in tests, runs between the bus's acknowledgement and the
	// mark: where a crash leaves events published but not marked.
	afterPublish func(tenantID int64, evs []*herd.Event)
}

// New returns a relay with the defaults and a unique owner name.
func New(store herd.OutboxService, bus herd.EventBus) *Relay {
	return &Relay{
		Store:      store,
		Bus:        bus,
		Owner:      owner.Unique(),
		Lease:      DefaultLease,
		Poll:       DefaultPoll,
		Batch:      DefaultBatch,
		MaxTenants: DefaultMaxTenants,
		MarkEvery:  DefaultMarkEvery,
		Logger:     slog.New(slog.DiscardHandler),
		metrics:    newMetrics(),
		markKick:   make(chan struct{}, 1),
	}
}

// held is a tenant this relay holds: how far it has published (acked by
// the stream) and how far the store knows it has.
type held struct {
	published, marked int64
	until             time.Time // the lease, as last renewed
	// acked lists the batches published and not yet marked: their last
	// seq and when the stream acknowledged them (for MarkDelay).
	acked []ackedBatch
}

type ackedBatch struct {
	seq int64
	at  time.Time
}

// Run publishes until ctx ends, then marks what it published and gives up
// its leases so that another relay may go on at once.
//
// Publishing and marking are apart: a batch is marked by a marker that
// runs at most every MarkEvery, so that a steady trickle of commits costs
// the store one write per MarkEvery instead of one per commit. What was
// published and not yet marked when a relay dies is published again by
// the next holder: the stream drops it within its duplicate window, and
// consumers deduplicate anyway.
func (r *Relay) Run(ctx context.Context) error {
	r.mu.Lock()
	r.held = map[int64]*held{}
	r.mu.Unlock()
	markCtx, stopMarker := context.WithCancel(context.WithoutCancel(ctx))
	markerDone := make(chan struct{})
	go func() {
		defer close(markerDone)
		r.markLoop(markCtx)
	}()
	defer func() {
		stopMarker()
		<-markerDone
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		// A clean stop marks all it published: the bus is closed after
		// the relay, and a clean close of the embedded server syncs its
		// files.
		r.markAll(rctx, true)
		if err := r.Store.ReleaseOutbox(rctx, r.Owner); err != nil {
			r.Logger.Warn("outbox leases not released; they run out by themselves", "err", err)
		}
	}()
	poll := time.NewTimer(0)
	defer poll.Stop()
	var failures int
	var lastClaim time.Time
	claimNow := true
	for {
		worked, err := r.round(ctx, claimNow || time.Since(lastClaim) >= r.Poll)
		if err == nil && (claimNow || time.Since(lastClaim) >= r.Poll) {
			lastClaim = time.Now()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		claimNow = false
		wait := r.Poll
		switch {
		case err != nil:
			failures++
			// Full jitter: relays that failed together do not retry together.
			wait = time.Duration(mrand.Int64N(int64(min(50*time.Millisecond<<min(failures, 10), MaxBackoff)) + 1))
			r.Logger.Warn("outbox relay round failed; retrying", "err", err, "failures", failures, "retry_in", wait)
			claimNow = true
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
			claimNow = true
		case <-wake:
		}
	}
}

// round publishes what the held tenants have, then claims tenants when
// claim is set or when the held ones had nothing (the commit that woke the
// relay may be another tenant's), and publishes what those have. Claiming
// writes to the store, where it may queue behind other writers: it comes
// after the held tenants' events, not before them. It reports whether it
// published anything.
func (r *Relay) round(ctx context.Context, claim bool) (bool, error) {
	worked, err := r.publishHeld(ctx)
	if err != nil || (worked && !claim) {
		return worked, err
	}
	if err := r.claim(ctx); err != nil {
		return worked, err
	}
	more, err := r.publishHeld(ctx)
	return worked || more, err
}

// claim takes (or renews) the tenants with unpublished events.
func (r *Relay) claim(ctx context.Context) error {
	claims, err := r.Store.ClaimOutbox(ctx, r.Owner, r.Lease, r.MaxTenants)
	if err != nil {
		return err
	}
	until := time.Now().Add(r.Lease)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range claims {
		h := r.held[c.TenantID]
		if h == nil || h.published < c.PublishedSeq {
			// New to us, or marked further by another relay since.
			h = &held{published: c.PublishedSeq, marked: c.PublishedSeq}
			r.held[c.TenantID] = h
		}
		h.until = until
	}
	// A tenant whose lease ran out may be another relay's now.
	now := time.Now()
	for t, h := range r.held {
		if now.After(h.until) {
			delete(r.held, t)
		}
	}
	return nil
}

// publishHeld publishes each held tenant's events after what it published,
// batch by batch, for at most a third of the lease.
func (r *Relay) publishHeld(ctx context.Context) (bool, error) {
	r.mu.Lock()
	tenants := make([]int64, 0, len(r.held))
	for t := range r.held {
		tenants = append(tenants, t)
	}
	r.mu.Unlock()
	slices.Sort(tenants)
	deadline := time.Now().Add(r.Lease / 3)
	worked := false
	var errs []error
	for _, t := range tenants {
		n, err := r.drain(ctx, t, deadline)
		worked = worked || n > 0
		if err != nil {
			errs = append(errs, fmt.Errorf("tenant %d: %w", t, err))
			if ctx.Err() != nil {
				break
			}
		}
	}
	return worked, errors.Join(errs...)
}

// drain publishes one tenant's events after its published mark.
func (r *Relay) drain(ctx context.Context, tenant int64, deadline time.Time) (int, error) {
	total := 0
	for {
		r.mu.Lock()
		h := r.held[tenant]
		if h == nil || time.Now().After(h.until) {
			r.mu.Unlock()
			return total, nil // lost, or to be claimed again first
		}
		cursor := h.published
		r.mu.Unlock()
		evs, err := r.Store.OutboxEvents(ctx, tenant, cursor, r.Batch)
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
			r.afterPublish(tenant, evs)
		}
		r.mu.Lock()
		if h := r.held[tenant]; h != nil && h.published == cursor {
			h.published = evs[len(evs)-1].Seq
			h.acked = append(h.acked, ackedBatch{h.published, acked})
		}
		r.mu.Unlock()
		r.kickMarker()
		for _, ev := range evs {
			r.metrics.commitToAck.Observe(acked.Sub(ev.CreatedAt).Seconds())
		}
		r.metrics.published.Add(float64(len(evs)))
		r.metrics.duplicates.Add(float64(dups))
		total += len(evs)
		if len(evs) < r.Batch || time.Now().After(deadline) {
			return total, nil
		}
	}
}

func (r *Relay) kickMarker() {
	select {
	case r.markKick <- struct{}{}:
	default:
	}
}

// markLoop marks what was published, at most every MarkEvery, and comes
// back by itself while something waits for its MarkDelay or a failed mark.
func (r *Relay) markLoop(ctx context.Context) {
	var again <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.markKick:
		case <-again:
		}
		wait := r.markAll(ctx, false)
		again = nil
		if wait >= 0 {
			again = time.After(max(wait, r.MarkEvery))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.MarkEvery):
		}
	}
}

// markAll moves the store's cursor of every held tenant to the last batch
// the stream acknowledged at least MarkDelay ago (any, when final); a
// tenant whose lease was lost is let go. It returns how long until the next
// batch is due, or -1 when nothing waits.
func (r *Relay) markAll(ctx context.Context, final bool) time.Duration {
	type mark struct{ tenant, seq int64 }
	var marks []mark
	now := time.Now()
	r.mu.Lock()
	for t, h := range r.held {
		seq := h.marked
		for _, b := range h.acked {
			if final || now.Sub(b.at) >= r.MarkDelay {
				seq = b.seq
			}
		}
		if seq > h.marked {
			marks = append(marks, mark{t, seq})
		}
	}
	r.mu.Unlock()
	for _, m := range marks {
		err := r.Store.MarkPublished(ctx, r.Owner, m.tenant, m.seq, r.Lease)
		r.mu.Lock()
		h := r.held[m.tenant]
		switch {
		case errors.Is(err, herd.ErrLeaseLost):
			r.metrics.leaseLost.Inc()
			r.Logger.Info("outbox tenant taken over by another relay", "tenant", m.tenant)
			delete(r.held, m.tenant)
		case err != nil:
			if ctx.Err() == nil {
				r.Logger.Warn("outbox mark failed; retrying", "tenant", m.tenant, "err", err)
			}
		case h != nil:
			h.marked = max(h.marked, m.seq)
			h.until = time.Now().Add(r.Lease)
			h.acked = slices.DeleteFunc(h.acked, func(b ackedBatch) bool { return b.seq <= h.marked })
		}
		r.mu.Unlock()
	}
	next := time.Duration(-1)
	r.mu.Lock()
	for _, h := range r.held {
		for _, b := range h.acked {
			if d := max(r.MarkDelay-time.Since(b.at), 0); next < 0 || d < next {
				next = d
			}
		}
	}
	r.mu.Unlock()
	return next
}
