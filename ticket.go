package herd

import (
	"context"
	"strings"
	"time"
)

// TicketTTL is how long a socket ticket may wait to be used. It is short
// because a ticket travels in a URL, and URLs end up in proxies' logs and
// browsers' histories.
const TicketTTL = 30 * time.Second

// TicketPrefix starts every ticket herd issues, so that a leaked one is
// easy to recognise and is never taken for a token.
const TicketPrefix = "herd_ticket_"

// Ticket opens one WebSocket (GET /v1/stream or /v1/apps/socket) for a
// client that cannot send an Authorization header, as a browser's
// WebSocket cannot. It is asked for with the token (POST /v1/stream/tickets),
// works once, within TicketTTL, and acts as the token it was issued to:
// that token's tenant and grants, read when the ticket is used, and a
// ticket whose token is revoked or deleted fails. The store keeps only a
// hash of it, so any process on the store accepts it.
type Ticket struct {
	Secret string `json:"ticket"`
	// URL is where the ticket opens the stream (filled in by the API).
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Reauthenticator reads again the actor of the token a connection was
// opened with, as it is now: a long-lived socket checks it after every
// change of access. It returns EUNAUTHORIZED once the token is revoked.
type Reauthenticator func(ctx context.Context) (*Actor, error)

// TicketService issues and spends socket tickets.
type TicketService interface {
	// CreateTicket issues a ticket for the token of the actor in ctx.
	// Returns EUNAUTHORIZED when the token was revoked meanwhile.
	CreateTicket(ctx context.Context) (*Ticket, error)
	// RedeemTicket spends a ticket, at most once however many processes
	// try, and returns the actor of its token with grants read now, and
	// the way to read that actor again. Returns EUNAUTHORIZED for a ticket
	// that is unknown, used, expired, or whose token is gone.
	RedeemTicket(ctx context.Context, secret string) (*Actor, Reauthenticator, error)
}

// IsTicketSecret reports whether s has the shape of a ticket herd issues.
func IsTicketSecret(s string) bool {
	return strings.HasPrefix(s, TicketPrefix) && len(s) > len(TicketPrefix)+20
}
