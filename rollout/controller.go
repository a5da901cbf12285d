// Package rollout drives rollouts: the controller every herd process runs.
// It claims active rollouts by a lease in the store, as the relay claims
// tenants, so one process drives a rollout at a time, and steps each one it
// holds: every step reads what the devices answered from the store (what
// ingest committed: config answers, OTA progress, connects and
// disconnects, reported firmware), decides, and commits its decisions with
// their events in one transaction (see herd.RolloutDriver). Nothing the
// controller knows lives only in its memory, so a process killed at any
// point leaves a rollout that the next holder of its lease takes on from
// its last commit: no member skipped, none told twice.
package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/owner"
)

// Defaults.
const (
	DefaultLease = 15 * time.Second
	// DefaultPoll is how often the controller steps its rollouts without
	// being woken: it bounds how late it sees an answer committed by
	// another process.
	DefaultPoll = 500 * time.Millisecond
	// DefaultMinInterval is the least time between two rounds, however
	// often commits wake the controller.
	DefaultMinInterval = 50 * time.Millisecond
	DefaultMaxRollouts = 64
	maxBackoff         = 5 * time.Second
)

// Controller steps the rollouts it holds. Create it with New, set its
// fields, then Run.
type Controller struct {
	Store herd.RolloutDriver
	// Owner names this controller in the leases: unique per process, or
	// the same across a restart of one process so that it takes its
	// rollouts back at once.
	Owner string
	Lease time.Duration
	Poll  time.Duration
	// Wake (if set) wakes the controller at once: this process's commits
	// of events, among them devices' answers and connects.
	Wake        <-chan struct{}
	MinInterval time.Duration
	MaxRollouts int
	Logger      *slog.Logger

	metrics *metrics
	// afterStep, in tests, runs after each committed step.
	afterStep func(id int64, st herd.RolloutStep)
}

// New returns a controller with the defaults and a unique owner name.
func New(store herd.RolloutDriver) *Controller {
	return &Controller{
		Store:       store,
		Owner:       owner.Unique(),
		Lease:       DefaultLease,
		Poll:        DefaultPoll,
		MinInterval: DefaultMinInterval,
		MaxRollouts: DefaultMaxRollouts,
		Logger:      slog.New(slog.DiscardHandler),
		metrics:     newMetrics(),
	}
}

// Run steps rollouts until ctx ends, then gives up its leases so that
// another process may go on at once.
func (c *Controller) Run(ctx context.Context) error {
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := c.Store.ReleaseRollouts(rctx, c.Owner); err != nil {
			c.Logger.Warn("rollout leases not released; they run out by themselves", "err", err)
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var failures int
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		case <-c.Wake:
			// Let a burst of commits settle into one round.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(c.MinInterval):
			}
		}
		start := time.Now()
		busy, next, err := c.round(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := c.Poll
		switch {
		case err != nil:
			failures++
			// Full jitter, so that controllers that failed together do
			// not retry together.
			wait = time.Duration(mrand.Int64N(int64(min(100*time.Millisecond<<min(failures, 10), maxBackoff)) + 1))
			c.Logger.Warn("rollout round failed; retrying", "err", err, "failures", failures, "retry_in", wait)
		case busy:
			failures = 0
			wait = max(c.MinInterval-time.Since(start), 0)
		default:
			failures = 0
			if !next.IsZero() {
				wait = max(min(wait, time.Until(next)), 0)
			}
		}
		timer.Reset(wait)
	}
}

// round claims (and renews) rollouts and steps each once. busy says a
// step made decisions, so there may be more to make at once; next is the
// earliest time a step asked to be run again.
func (c *Controller) round(ctx context.Context) (busy bool, next time.Time, err error) {
	ids, err := c.Store.ClaimRollouts(ctx, c.Owner, c.Lease, c.MaxRollouts)
	if err != nil {
		return false, next, fmt.Errorf("claim rollouts: %w", err)
	}
	c.metrics.held.Set(float64(len(ids)))
	var errs []error
	for _, id := range ids {
		start := time.Now()
		st, err := c.Store.StepRollout(ctx, c.Owner, id, c.Lease)
		c.metrics.stepSeconds.Observe(time.Since(start).Seconds())
		switch {
		case errors.Is(err, herd.ErrRolloutLeaseLost):
			c.metrics.steps.WithLabelValues("lease_lost").Inc()
			continue
		case err != nil:
			c.metrics.steps.WithLabelValues("error").Inc()
			errs = append(errs, err)
			continue
		}
		c.metrics.steps.WithLabelValues("ok").Inc()
		c.metrics.decisions.Add(float64(st.Decisions))
		if st.Decisions > 0 {
			busy = true
			c.Logger.Debug("rollout stepped", "rollout", id, "state", st.State, "decisions", st.Decisions)
		}
		if !st.Next.IsZero() && (next.IsZero() || st.Next.Before(next)) {
			next = st.Next
		}
		if c.afterStep != nil {
			c.afterStep(id, st)
		}
	}
	return busy, next, errors.Join(errs...)
}
