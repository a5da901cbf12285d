package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/herd-iot/herd"
)

// IdempotencyService implements herd.IdempotencyStore.
type IdempotencyService struct{ db *DB }

var _ herd.IdempotencyStore = (*IdempotencyService)(nil)

// NewIdempotencyService returns an IdempotencyService on db.
func NewIdempotencyService(db *DB) *IdempotencyService { return &IdempotencyService{db: db} }

// BeginRequest implements herd.IdempotencyStore. The claim is an insert
// under the key's primary key: of concurrent requests with one key, one
// inserts; on PostgreSQL the others wait for its commit, find its row, and
// answer "running".
func (s *IdempotencyService) BeginRequest(ctx context.Context, scope, key, hash string, lock time.Duration) (herd.IdempotencyResult, error) {
	var r herd.IdempotencyResult
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return r, err
	}
	defer tx.Rollback()
	now := tx.now.UnixMilli()
	res, err := tx.ExecContext(ctx, `INSERT INTO idempotency_keys (scope, key, request_hash, status, locked_until, expires_at) VALUES (?, ?, ?, 'running', ?, ?) ON CONFLICT DO NOTHING`,
		scope, key, hash, now+lock.Milliseconds(), now+herd.IdempotencyKeyTTL.Milliseconds())
	if err != nil {
		return r, fmt.Errorf("claim idempotency key: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		r.State = herd.IdempotencyNew
		return r, tx.Commit()
	}
	var storedHash, status string
	var respStatus int
	var body string
	var lockedUntil, expires int64
	err = tx.QueryRowContext(ctx, `SELECT request_hash, status, response_status, response_body, locked_until, expires_at FROM idempotency_keys WHERE scope = ? AND key = ?`, scope, key).
		Scan(&storedHash, &status, &respStatus, &body, &lockedUntil, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		// Released between the insert and the read: a retry runs it.
		r.State = herd.IdempotencyRunning
		return r, nil
	} else if err != nil {
		return r, err
	}
	switch {
	case expires <= now || (status == "running" && lockedUntil <= now && storedHash == hash):
		// Forgotten after 24 h, or its first request died without an
		// answer: this one takes the key over. (What that request did, if
		// it committed, the operation's own key finds: a command is
		// created once per token and key.)
		// Only if the row is still as read: of two retries taking over at
		// once, one wins (on PostgreSQL the other waits for it, then
		// finds the row changed).
		res, err := tx.ExecContext(ctx, `UPDATE idempotency_keys SET request_hash = ?, status = 'running', response_status = 0, response_body = '', locked_until = ?, expires_at = ? WHERE scope = ? AND key = ? AND status = ? AND locked_until = ? AND expires_at = ?`,
			hash, now+lock.Milliseconds(), now+herd.IdempotencyKeyTTL.Milliseconds(), scope, key, status, lockedUntil, expires)
		if err != nil {
			return r, err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			r.State = herd.IdempotencyRunning
			return r, nil
		}
		r.State = herd.IdempotencyNew
		return r, tx.Commit()
	case storedHash != hash:
		r.State = herd.IdempotencyMismatch
	case status == "running":
		r.State = herd.IdempotencyRunning
	default:
		r.State, r.Status, r.Body = herd.IdempotencyReplay, respStatus, []byte(body)
	}
	return r, nil
}

// CompleteRequest implements herd.IdempotencyStore.
func (s *IdempotencyService) CompleteRequest(ctx context.Context, scope, key string, status int, body []byte) error {
	_, err := s.db.wdb.ExecContext(ctx, s.db.rebind(`UPDATE idempotency_keys SET status = 'done', response_status = ?, response_body = ? WHERE scope = ? AND key = ?`), status, string(body), scope, key)
	return err
}

// ReleaseRequest implements herd.IdempotencyStore.
func (s *IdempotencyService) ReleaseRequest(ctx context.Context, scope, key string) error {
	_, err := s.db.wdb.ExecContext(ctx, s.db.rebind(`DELETE FROM idempotency_keys WHERE scope = ? AND key = ? AND status = 'running'`), scope, key)
	return err
}

// PruneIdempotencyKeys forgets the keys older than their 24 hours.
func (db *DB) PruneIdempotencyKeys(ctx context.Context) (int64, error) {
	res, err := db.wdb.ExecContext(ctx, db.rebind(`DELETE FROM idempotency_keys WHERE expires_at <= ?`), db.Now().UnixMilli())
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
