package herd

import (
	"context"
	"time"
)

// IdempotencyKeyTTL is how long an Idempotency-Key is remembered.
const IdempotencyKeyTTL = 24 * time.Hour

// What BeginRequest found for an idempotency key.
const (
	IdempotencyNew      = "new"      // first use, or no earlier use committed: run the request
	IdempotencyReplay   = "replay"   // done: answer the stored response
	IdempotencyRunning  = "running"  // the first request with this key is still running
	IdempotencyMismatch = "mismatch" // the key was used for another request
)

// IdempotencyResult is what BeginRequest found: the stored response of a
// replay, or the claim of a new request.
type IdempotencyResult struct {
	State  string
	Status int
	Body   []byte
	// Claim is set for a new request, which must end it with Complete or
	// Release.
	Claim IdempotencyClaim
}

// IdempotencyStore remembers requests by key. scope separates tenants,
// tokens and routes; the store also keeps each tenant's keys apart by the
// tenant of the context's actor (a super-admin's belong to no tenant), so
// that no scope string can reach another tenant's.
type IdempotencyStore interface {
	// BeginRequest claims the key for a request with this hash, unless a
	// live request holds it or a done one answered it already. The claim
	// lasts as long as the running request and no longer: a claim whose
	// process died is no obstacle to a retry.
	BeginRequest(ctx context.Context, scope, key, hash string) (IdempotencyResult, error)
}

// IdempotencyClaim is a key claimed for one run of a request. The store's
// writes made with the claim's context are part of the claim: they commit
// with the stored answer, in one transaction, or not at all. So after any
// crash a retry finds either the answer or no trace of the request.
type IdempotencyClaim interface {
	// Context returns ctx carrying the claim; the request runs with it.
	Context(ctx context.Context) context.Context
	// Complete stores the answer and commits it with the request's
	// writes. When it fails, neither is committed.
	Complete(status int, body []byte) error
	// Release forgets the claim and rolls back the request's writes, so
	// that a retry runs the request again. After Complete it does nothing.
	Release()
}
