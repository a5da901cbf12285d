package herd

import (
	"context"
	"time"
)

// IdempotencyKeyTTL is how long an Idempotency-Key is remembered.
const IdempotencyKeyTTL = 24 * time.Hour

// What BeginRequest found for an idempotency key.
const (
	IdempotencyNew      = "new"      // first use (or the first one died): run the request
	IdempotencyReplay   = "replay"   // done: answer the stored response
	IdempotencyRunning  = "running"  // the first request with this key is still running
	IdempotencyMismatch = "mismatch" // the key was used for another request
)

// IdempotencyResult is what BeginRequest found, with the stored response
// of a replay.
type IdempotencyResult struct {
	State  string
	Status int
	Body   []byte
}

// IdempotencyStore remembers requests by key. scope separates tenants,
// tokens and routes.
type IdempotencyStore interface {
	// BeginRequest claims the key for a request with this hash, for lock
	// (after which a retry may take the claim over), unless it is claimed
	// or done already.
	BeginRequest(ctx context.Context, scope, key, hash string, lock time.Duration) (IdempotencyResult, error)
	// CompleteRequest stores the response of a claimed key.
	CompleteRequest(ctx context.Context, scope, key string, status int, body []byte) error
	// ReleaseRequest forgets a claimed key whose request failed, so that
	// a retry runs it again.
	ReleaseRequest(ctx context.Context, scope, key string) error
}
