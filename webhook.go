package herd

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Event types of webhook subscriptions.
const (
	EventWebhookCreated  = "webhook.created"
	EventWebhookDeleted  = "webhook.deleted"
	EventWebhookDisabled = "webhook.disabled"
	EventWebhookRedriven = "webhook.redriven"
	EventSubjectWebhook  = "webhook"
)

// Webhook statuses.
const (
	WebhookActive   = "active"
	WebhookDisabled = "disabled"
)

// Delivery statuses: pending (waiting for its next attempt), delivered
// (answered 2xx), dead (out of retries, or its subscription was disabled:
// the dead-letter list, which a redrive puts back to pending).
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryDead      = "dead"
)

// Webhook headers. The signature is "v1=" and the hex HMAC-SHA256, keyed
// by the subscription's secret, of the timestamp, a dot and the body.
const (
	HeaderWebhookEventID     = "Herd-Event-Id"
	HeaderWebhookTimestamp   = "Herd-Timestamp"
	HeaderWebhookSignature   = "Herd-Signature"
	HeaderWebhookRetryNum    = "Herd-Retry-Num"
	HeaderWebhookRetryReason = "Herd-Retry-Reason"
)

// MaxWebhookEventTypes bounds the event type patterns of one subscription.
const MaxWebhookEventTypes = 50

// Webhook is a subscription: herd POSTs each event of the chosen types
// under the chosen node to URL, signed with Secret.
type Webhook struct {
	ID       int64  `json:"id,string"`
	TenantID int64  `json:"tenant_id,string"`
	NodeID   int64  `json:"node_id,string"`
	Path     string `json:"path"`
	URL      string `json:"url"`
	// EventTypes are exact types ("device.online") or a prefix and a
	// star ("device.*"); "*" is every type.
	EventTypes     []string `json:"event_types"`
	Status         string   `json:"status"`
	DisabledReason string   `json:"disabled_reason,omitempty"`
	// Secret signs the deliveries. The API shows it once, in the answer
	// to the create call.
	Secret    string    `json:"secret,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Validate reports whether the subscription's own fields are acceptable.
func (w *Webhook) Validate() error {
	if err := CheckText("url", w.URL, MaxURLLen); err != nil {
		return err
	}
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Errorf(EINVALID, "url must be an absolute http or https URL, not %q", w.URL)
	} else if u.User != nil {
		return Errorf(EINVALID, "url must not carry credentials: receivers check the signature instead")
	}
	if len(w.EventTypes) == 0 {
		return Errorf(EINVALID, `event_types is required: event types such as "device.online", patterns such as "device.*", or "*" for all`)
	} else if len(w.EventTypes) > MaxWebhookEventTypes {
		return Errorf(EINVALID, "event_types has %d entries, at most %d", len(w.EventTypes), MaxWebhookEventTypes)
	}
	for i, t := range w.EventTypes {
		if err := CheckText("event_types["+strconv.Itoa(i)+"]", t, 64); err != nil {
			return err
		} else if !ValidEventPattern(t) {
			return Errorf(EINVALID, `event type %q is not a type such as "device.online", a pattern such as "device.*", or "*"`, t)
		}
	}
	if w.NodeID == 0 {
		return Errorf(EINVALID, "node_id is required: the subscription gets the events under that node")
	}
	return nil
}

// ValidEventPattern reports whether p is an event type, a prefix and a
// star ("device.*"), or "*".
func ValidEventPattern(p string) bool {
	if p == "*" {
		return true
	}
	p = strings.TrimSuffix(p, ".*")
	if p == "" || len(p) > 64 {
		return false
	}
	for _, part := range strings.Split(p, ".") {
		if part == "" {
			return false
		}
		for _, c := range part {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
				return false
			}
		}
	}
	return true
}

// Wants reports whether the subscription takes ev: one of its types and
// under its node.
func (w *Webhook) Wants(ev *Event) bool {
	if w.Status != WebhookActive || ev.TenantID != w.TenantID || !PathUnder(ev.Path, w.Path) {
		return false
	}
	return MatchEventType(w.EventTypes, ev.Type)
}

// MatchEventType reports whether an event type matches one of the
// patterns: a type, a prefix and a star ("device.*"), or "*".
func MatchEventType(patterns []string, typ string) bool {
	for _, p := range patterns {
		switch {
		case p == "*", p == typ:
			return true
		case strings.HasSuffix(p, ".*") && strings.HasPrefix(typ, p[:len(p)-1]):
			return true
		}
	}
	return false
}

// WebhookSignature returns the Herd-Signature of a delivery: "v1=" and the
// hex HMAC-SHA256 of "timestamp.body" keyed by the secret.
func WebhookSignature(secret string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strconv.FormatInt(timestamp, 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1=" + hex.EncodeToString(mac.Sum(nil))
}

// WebhookDelivery is one event on its way to one subscription.
type WebhookDelivery struct {
	ID        int64     `json:"id,string"`
	WebhookID int64     `json:"webhook_id,string"`
	EventID   int64     `json:"event_id,string"`
	EventType string    `json:"event_type"`
	Status    string    `json:"status"`
	Attempts  int       `json:"attempts"`
	NextAt    time.Time `json:"next_attempt_at"`
	// LastStatus is the HTTP status of the last attempt, 0 when there was
	// no answer; LastReason says why it failed (timeout, connection,
	// http_500, …).
	LastStatus  int        `json:"last_status,omitempty"`
	LastReason  string     `json:"last_reason,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	DeliveredAt *time.Time `json:"delivered_at,omitempty"`
}

// WebhookService manages subscriptions for API callers. Managing a
// subscription needs the admin role on its node.
type WebhookService interface {
	CreateWebhook(ctx context.Context, w *Webhook) error
	// FindWebhooks lists the subscriptions under the nodes the actor
	// administers.
	FindWebhooks(ctx context.Context) ([]*Webhook, error)
	FindWebhookByID(ctx context.Context, id int64) (*Webhook, error)
	DeleteWebhook(ctx context.Context, id int64) error
	// FindDeliveries lists a subscription's deliveries, newest first,
	// of one status or all ("").
	FindDeliveries(ctx context.Context, webhookID int64, status string, limit int) ([]*WebhookDelivery, error)
	// RedriveWebhook puts the subscription's dead deliveries back in the
	// queue, enabling the subscription again if it was disabled. It
	// returns how many were put back.
	RedriveWebhook(ctx context.Context, id int64) (int, error)
}

// DeliveryJob is a claimed delivery with what its attempt needs.
type DeliveryJob struct {
	DeliveryID int64
	WebhookID  int64
	EventID    int64
	URL        string
	Secret     string
	Body       []byte
	// Attempts made before this one, and why the last one failed.
	Attempts   int
	LastReason string
	// RetryFrom starts the retry window: when the delivery was queued,
	// or last redriven. EventAt is when its event committed.
	RetryFrom time.Time
	EventAt   time.Time
	// ClaimedUntil is when the claim on this attempt runs out (and the
	// claim's version: a result is recorded only while it holds).
	ClaimedUntil time.Time
	// FailingSince is when the subscription's current run of failures
	// began; zero when its last attempt succeeded.
	FailingSince time.Time
}

// Attempt outcomes.
const (
	AttemptDelivered = "delivered" // 2xx
	AttemptRetry     = "retry"     // failed; tried again at NextAt
	AttemptDead      = "dead"      // failed, out of retries: dead-lettered
	AttemptGone      = "gone"      // 410: the subscription is disabled
	AttemptDisable   = "disable"   // failed for too long: the subscription is disabled
)

// AttemptResult is what one attempt came to.
type AttemptResult struct {
	Job     *DeliveryJob
	Outcome string
	Status  int
	Reason  string
	NextAt  time.Time
}

// WebhookQueue is what the dispatcher needs of the store.
type WebhookQueue interface {
	// EnqueueWebhooks is the webhook consumer's effect: it queues each
	// event for every subscription that wants it, in one transaction with
	// the consumer's records of the events. applied[i] is false when the
	// consumer had evs[i] already. The queued deliveries come back as jobs
	// claimed for lease, so that the caller sends them at once without
	// claiming them again; if it dies, the lease runs out and another
	// dispatcher takes them.
	EnqueueWebhooks(ctx context.Context, consumer string, evs []*Event, owner string, lease time.Duration) (applied []bool, jobs []*DeliveryJob, err error)
	// ClaimDeliveries takes up to max due deliveries for owner and moves
	// their next attempt ahead by lease, so no other dispatcher takes them
	// meanwhile.
	ClaimDeliveries(ctx context.Context, owner string, lease time.Duration, max int) ([]*DeliveryJob, error)
	// ReleaseClaims makes owner's claims that run out before until due at
	// once: a dispatcher starting again under its old name takes back what
	// its previous life claimed and did not finish (claims it makes itself
	// from now on run out later than now plus its lease, which it passes).
	ReleaseClaims(ctx context.Context, owner string, until time.Time) error
	// RecordAttempts stores what attempts came to.
	RecordAttempts(ctx context.Context, results []AttemptResult) error
	// DeadLetters counts the dead deliveries of all subscriptions.
	DeadLetters(ctx context.Context) (int64, error)
}
