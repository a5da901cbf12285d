// Package webhook delivers herd's events to subscribers' URLs: signed,
// retried with exponential backoff and full jitter for up to 72 hours, then
// dead-lettered. Delivery is at least once: a receiver that times out after
// doing the work gets the event again, with the same Herd-Event-Id, and is
// told to deduplicate by it.
//
// Two parts: a JetStream consumer (Consumer) whose effect is to queue the
// event for each subscription that wants it, in the same transaction as its
// record of the event; and a dispatcher (Dispatcher) that sends what is due
// and records each attempt. The queue lives in the store, so deliveries
// survive restarts and several processes share the work.
package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/owner"
	"github.com/herd-iot/herd/natsbus"
)

// ConsumerName is the durable name of the webhook consumer and the name its
// effects are recorded under.
const ConsumerName = "webhooks"

// The delivery schedule.
const (
	// Timeout is how long a receiver has to answer 2xx.
	DefaultTimeout = 3 * time.Second
	// A failed attempt is retried after a wait drawn uniformly from zero to
	// RetryBase × 2^(attempts−1), capped at RetryCap (full jitter), until
	// RetryFor has passed since the delivery was queued: then it is dead.
	DefaultRetryBase = 10 * time.Second
	DefaultRetryCap  = time.Hour
	DefaultRetryFor  = 72 * time.Hour
	// A subscription whose every attempt failed for DisableAfter is
	// disabled, with a webhook.disabled event.
	DefaultDisableAfter = 72 * time.Hour
)

// Consumer returns the JetStream consumer that queues deliveries and hands
// them, claimed, to d to send at once.
func Consumer(q herd.WebhookQueue, d *Dispatcher) natsbus.Consumer {
	return natsbus.Consumer{
		Name: ConsumerName,
		// From the stream's start, also when the consumer is made again
		// (deleted by an operator, or a NATS store lost): its records make
		// what it applied before duplicates, and subscriptions never take
		// events older than themselves.
		Batch: func(ctx context.Context, evs []*herd.Event) ([]bool, error) {
			applied, jobs, err := q.EnqueueWebhooks(ctx, ConsumerName, evs, d.Owner, d.claimLease())
			if err == nil && len(jobs) > 0 {
				d.submit(jobs)
			}
			return applied, err
		},
	}
}

// Dispatcher sends due deliveries. Create it with NewDispatcher, set its
// fields, then Run.
type Dispatcher struct {
	Queue herd.WebhookQueue
	// Owner names this dispatcher in its claims. A dispatcher that starts
	// under the name of one that died takes back what that one claimed at
	// once, instead of after the claims run out.
	Owner  string
	Client *http.Client
	// Workers is the most deliveries in flight at once.
	Workers int
	// Poll is how often it looks for due deliveries besides those the
	// consumer hands it (retries, redrives, another process's leftovers).
	Poll                                        time.Duration
	Timeout                                     time.Duration
	RetryBase, RetryCap, RetryFor, DisableAfter time.Duration
	Logger                                      *slog.Logger
	Now                                         func() time.Time

	submitted chan []*herd.DeliveryJob
	metrics   *metrics
}

// NewDispatcher returns a dispatcher with the default schedule.
func NewDispatcher(q herd.WebhookQueue) *Dispatcher {
	return &Dispatcher{
		Queue: q,
		Client: &http.Client{
			// Redirects are not followed: a subscription names its URL.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Transport: &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				DialContext:         (&net.Dialer{Timeout: DefaultTimeout, KeepAlive: 30 * time.Second}).DialContext,
				MaxIdleConnsPerHost: 16,
				IdleConnTimeout:     90 * time.Second,
				TLSHandshakeTimeout: DefaultTimeout,
			},
		},
		Owner:        owner.Unique(),
		Workers:      32,
		Poll:         250 * time.Millisecond,
		Timeout:      DefaultTimeout,
		RetryBase:    DefaultRetryBase,
		RetryCap:     DefaultRetryCap,
		RetryFor:     DefaultRetryFor,
		DisableAfter: DefaultDisableAfter,
		Logger:       slog.New(slog.DiscardHandler),
		Now:          time.Now,
		submitted:    make(chan []*herd.DeliveryJob, 64),
		metrics:      newMetrics(),
	}
}

// claimLease is how long a claimed delivery stays this dispatcher's: it
// outlasts the attempt and the recording of its result, so no other
// dispatcher takes one in flight.
func (d *Dispatcher) claimLease() time.Duration { return d.Timeout + 10*time.Second }

// submit hands over deliveries claimed for this dispatcher. When too many
// wait already, they are left to their claim's lease, after which the
// queue gives them out again.
func (d *Dispatcher) submit(jobs []*herd.DeliveryJob) {
	select {
	case d.submitted <- jobs:
	default:
		d.Logger.Warn("webhook dispatcher busy; deliveries wait for their claim to run out", "n", len(jobs))
	}
}

// Run sends deliveries until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) error {
	// Only the claims of an earlier life: those this run makes (the
	// consumer may already be queueing) run out after now plus the lease.
	if err := d.Queue.ReleaseClaims(ctx, d.Owner, d.Now().Add(d.claimLease())); err != nil {
		d.Logger.Warn("claims of an earlier run not taken back; they run out by themselves", "err", err)
	}
	sem := make(chan struct{}, d.Workers)
	results := make(chan herd.AttemptResult, d.Workers)
	var wg sync.WaitGroup
	recorded := make(chan struct{})
	go func() {
		defer close(recorded)
		d.record(results)
	}()
	defer func() {
		wg.Wait()
		close(results)
		<-recorded
	}()
	poll := time.NewTimer(0)
	defer poll.Stop()
	send := func(j *herd.DeliveryJob) {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r := d.attempt(ctx, j)
			if ctx.Err() != nil && r.Outcome != herd.AttemptDelivered {
				// Cut short by the shutdown, not the receiver's fault:
				// the claim runs out and the next start sends it again.
				return
			}
			results <- r
		})
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case jobs := <-d.submitted:
			for _, j := range jobs {
				if time.Until(j.ClaimedUntil) < d.Timeout {
					// Waited too long for a worker: its claim may run out
					// while in flight. The queue gives it out again.
					continue
				}
				send(j)
			}
			continue
		case <-poll.C:
		}
		free := d.Workers - len(sem)
		if free == 0 {
			poll.Reset(10 * time.Millisecond)
			continue
		}
		jobs, err := d.Queue.ClaimDeliveries(ctx, d.Owner, d.claimLease(), free)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			d.Logger.Warn("claiming webhook deliveries failed", "err", err)
			poll.Reset(time.Second)
			continue
		}
		for _, j := range jobs {
			send(j)
		}
		if len(jobs) == free {
			poll.Reset(0) // more may be due
		} else {
			poll.Reset(d.Poll)
		}
	}
}

// record stores results, as many as have arrived in one transaction.
func (d *Dispatcher) record(results <-chan herd.AttemptResult) {
	for r := range results {
		batch := []herd.AttemptResult{r}
	more:
		for len(batch) < 256 {
			select {
			case r, ok := <-results:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := d.Queue.RecordAttempts(ctx, batch)
		cancel()
		if err != nil {
			// The claims' leases run out and the deliveries are sent again:
			// at least once, as promised.
			d.Logger.Error("recording webhook attempts failed; those deliveries will be sent again", "n", len(batch), "err", err)
		}
	}
}

// attempt sends one delivery and decides what comes of it.
func (d *Dispatcher) attempt(ctx context.Context, j *herd.DeliveryJob) herd.AttemptResult {
	status, reason := d.send(ctx, j)
	now := d.Now()
	r := herd.AttemptResult{Job: j, Status: status, Reason: reason}
	switch {
	case status >= 200 && status < 300:
		r.Outcome = herd.AttemptDelivered
	case status == http.StatusGone:
		r.Outcome = herd.AttemptGone
	case !j.FailingSince.IsZero() && now.Sub(j.FailingSince) >= d.DisableAfter:
		r.Outcome = herd.AttemptDisable
	case now.Sub(j.RetryFrom) >= d.RetryFor:
		r.Outcome = herd.AttemptDead
	default:
		r.Outcome = herd.AttemptRetry
		r.NextAt = now.Add(d.backoff(j.Attempts + 1))
	}
	d.metrics.attempts.WithLabelValues(r.Outcome).Inc()
	if r.Outcome == herd.AttemptDelivered {
		d.metrics.commitToDelivered.Observe(now.Sub(j.EventAt).Seconds())
	}
	return r
}

// backoff draws the wait before attempt n+1 after n failed ones.
func (d *Dispatcher) backoff(failed int) time.Duration {
	// Compare before shifting: RetryBase << (failed-1) overflows long
	// before a delivery runs out of its 72 hours.
	ceiling := d.RetryCap
	if shift := failed - 1; shift < 62 && d.RetryBase <= d.RetryCap>>shift {
		ceiling = d.RetryBase << shift
	}
	return time.Duration(mrand.Int64N(int64(max(ceiling, 0)) + 1))
}

// send POSTs the delivery and returns the HTTP status (0 when there was
// none) and, on failure, why.
func (d *Dispatcher) send(ctx context.Context, j *herd.DeliveryJob) (int, string) {
	ctx, cancel := context.WithTimeout(ctx, d.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.URL, bytes.NewReader(j.Body))
	if err != nil {
		return 0, "invalid_url"
	}
	ts := d.Now().Unix()
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "herd-webhooks/"+herd.Version)
	h.Set(herd.HeaderWebhookEventID, strconv.FormatInt(j.EventID, 10))
	h.Set(herd.HeaderWebhookTimestamp, strconv.FormatInt(ts, 10))
	h.Set(herd.HeaderWebhookSignature, herd.WebhookSignature(j.Secret, ts, j.Body))
	h.Set(herd.HeaderWebhookRetryNum, strconv.Itoa(j.Attempts))
	reason := j.LastReason
	if j.Attempts == 0 || reason == "" {
		reason = "none"
	}
	h.Set(herd.HeaderWebhookRetryReason, reason)
	resp, err := d.Client.Do(req)
	if err != nil {
		var ne net.Error
		switch {
		case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
			return 0, "timeout"
		case ctx.Err() != nil:
			return 0, "shutdown"
		}
		return 0, "connection_error"
	}
	// Read a little of the body so the connection can be reused; the
	// receiver's words are not kept.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, ""
	}
	return resp.StatusCode, fmt.Sprintf("http_%d", resp.StatusCode)
}
