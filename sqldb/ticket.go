package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/herd-iot/herd"
)

// TicketService implements herd.TicketService on the store, so that a
// ticket issued by one process opens a socket on any other of the same
// store (migration 0013).
type TicketService struct{ db *DB }

var _ herd.TicketService = (*TicketService)(nil)

// NewTicketService returns a TicketService on db.
func NewTicketService(db *DB) *TicketService { return &TicketService{db: db} }

// newTicketSecret returns a fresh ticket with 256 random bits.
func newTicketSecret() string { return newSecret(herd.TicketPrefix) }

// CreateTicket issues a ticket for the actor's token. The token's hash is
// copied from its row in the same statement, so a token revoked before
// this commits gets no ticket.
func (s *TicketService) CreateTicket(ctx context.Context) (*herd.Ticket, error) {
	a, err := actor(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return nil, fmt.Errorf("CreateTicket: %w", err)
	}
	defer tx.Rollback()
	// Tickets never used are swept here, by index, so the table holds no
	// more than the last TicketTTL's worth.
	if _, err := tx.ExecContext(ctx, `DELETE FROM stream_tickets WHERE expires_at <= ?`, tx.now.UnixMilli()); err != nil {
		return nil, fmt.Errorf("CreateTicket: sweep expired: %w", err)
	}
	t := &herd.Ticket{Secret: newTicketSecret(), ExpiresAt: tx.now.Add(herd.TicketTTL)}
	var res sql.Result
	if a.Super {
		res, err = tx.ExecContext(ctx, `INSERT INTO stream_tickets (hash, token_hash, tenant_id, expires_at) SELECT ?, hash, 0, ? FROM admin_tokens WHERE id = ?`,
			hashToken(t.Secret), t.ExpiresAt.UnixMilli(), a.TokenID)
	} else {
		res, err = tx.ExecContext(ctx, `INSERT INTO stream_tickets (hash, token_hash, tenant_id, expires_at) SELECT ?, hash, tenant_id, ? FROM tokens WHERE id = ? AND tenant_id = ? AND (expires_at IS NULL OR expires_at > ?)`,
			hashToken(t.Secret), t.ExpiresAt.UnixMilli(), a.TokenID, a.TenantID, tx.now.UnixMilli())
	}
	if err != nil {
		return nil, fmt.Errorf("CreateTicket: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return nil, fmt.Errorf("CreateTicket: %w", err)
	} else if n == 0 {
		return nil, herd.Errorf(herd.EUNAUTHORIZED, "invalid or revoked token")
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("CreateTicket: commit: %w", err)
	}
	return t, nil
}

// RedeemTicket spends a ticket. The DELETE is what makes it single use:
// of any number of transactions deleting the row, on one process or many,
// exactly one gets it back (PostgreSQL's row lock makes the others wait and
// then find nothing; SQLite has one writer). The token is read after the
// ticket is spent, by its hash: a token revoked by then fails the ticket.
func (s *TicketService) RedeemTicket(ctx context.Context, secret string) (*herd.Actor, herd.Reauthenticator, error) {
	unauth := herd.Errorf(herd.EUNAUTHORIZED, "invalid, used or expired ticket: ask POST /v1/stream/tickets for a new one")
	if !herd.IsTicketSecret(secret) {
		return nil, nil, unauth
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("RedeemTicket: %w", err)
	}
	defer tx.Rollback()
	var tokenHash string
	var tenantID, expires int64
	err = tx.QueryRowContext(ctx, `DELETE FROM stream_tickets WHERE hash = ? RETURNING token_hash, tenant_id, expires_at`, hashToken(secret)).Scan(&tokenHash, &tenantID, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, unauth
	} else if err != nil {
		return nil, nil, fmt.Errorf("RedeemTicket: %w", err)
	}
	// Spent either way: an expired ticket is gone as well.
	if err := tx.Commit(); err != nil {
		return nil, nil, fmt.Errorf("RedeemTicket: commit: %w", err)
	}
	if expires <= tx.now.UnixMilli() {
		return nil, nil, unauth
	}
	reauth := func(ctx context.Context) (*herd.Actor, error) { return s.actorOfToken(ctx, tokenHash, tenantID) }
	a, err := reauth(ctx)
	if err != nil {
		return nil, nil, err
	}
	return a, reauth, nil
}

// actorOfToken reads the actor of the token with the hash, as Authenticate
// does for a secret: in tenant tenantID (0: the super-admin's tokens), with
// its grants as they are now.
func (s *TicketService) actorOfToken(ctx context.Context, tokenHash string, tenantID int64) (*herd.Actor, error) {
	tx, err := s.db.beginRead(ctx)
	if err != nil {
		return nil, fmt.Errorf("read ticket's token: %w", err)
	}
	defer tx.Rollback()
	a, err := tx.actorOfTokenHash(ctx, tokenHash, anyToken)
	if err != nil {
		return nil, fmt.Errorf("read ticket's token: %w", err)
	}
	if a == nil || a.TenantID != tenantID {
		return nil, herd.Errorf(herd.EUNAUTHORIZED, "the ticket's token was revoked")
	}
	return a, nil
}
