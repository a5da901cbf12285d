package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/herd-iot/herd"
)

// IdempotencyService implements herd.IdempotencyStore.
//
// A claim is an open write transaction that has inserted the key's row, and
// the request runs inside it: every write transaction the services begin
// with the claim's context is a savepoint of it (see beginTx), and Complete
// writes the answer into the row and commits the lot. So the answer commits
// with the effect or neither does, and nothing of a claim outlives its
// process: after a crash the store holds either the answer or no trace of
// the request, and the retry replays it or runs it at once.
//
// Requests with one key are kept apart without waiting: in this process by
// the map of live claims (on SQLite a second claim would otherwise queue
// for the single writer behind the first); across processes on PostgreSQL
// by an advisory lock of the claim's transaction, which the server drops
// with the transaction when its process dies.
type IdempotencyService struct {
	db *DB

	mu   sync.Mutex
	live map[string]bool // scope and key of this process's open claims
}

var _ herd.IdempotencyStore = (*IdempotencyService)(nil)

// NewIdempotencyService returns an IdempotencyService on db.
func NewIdempotencyService(db *DB) *IdempotencyService {
	return &IdempotencyService{db: db, live: map[string]bool{}}
}

// BeginRequest implements herd.IdempotencyStore.
func (s *IdempotencyService) BeginRequest(ctx context.Context, scope, key, hash string) (herd.IdempotencyResult, error) {
	a, err := actor(ctx)
	if err != nil {
		return herd.IdempotencyResult{}, err
	}
	tenant := keyTenant(a)
	// A key answered already is answered from a read, without taking
	// SQLite's writer.
	if r, err := s.answered(ctx, tenant, scope, key, hash); err != nil || r.State != "" {
		return r, err
	}
	var r herd.IdempotencyResult
	// A key cannot hold NUL (herd.CheckText): the parts cannot run together.
	id := strconv.FormatInt(tenant, 10) + "\x00" + scope + "\x00" + key
	s.mu.Lock()
	if s.live[id] {
		s.mu.Unlock()
		r.State = herd.IdempotencyRunning
		return r, nil
	}
	s.live[id] = true
	s.mu.Unlock()
	claimed := false
	defer func() {
		if !claimed {
			s.forget(id)
		}
	}()

	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return r, fmt.Errorf("claim idempotency key: %w", err)
	}
	defer func() {
		if !claimed {
			tx.Rollback()
		}
	}()
	if s.db.dialect == Postgres {
		// Advisory locks are the database's, not the schema's: the
		// schema is part of the lock's name, so that stores side by side
		// in one database do not see each other's claims. The scope goes
		// in with its length, as a scope and a key may both hold '/': the
		// name of ("s/a", "b") is not that of ("s", "a/b").
		//
		// A process that is cut off or frozen rather than dead keeps its
		// connection, and the server would keep the claim until it found
		// the connection gone (TCP keepalive: hours), answering 409 to
		// every retry. No request outlives its deadline, so the server may
		// end a claim that sat idle past it: the request cannot be alive.
		var idle any // no deadline: the server's own setting
		if dl, ok := ctx.Deadline(); ok {
			idle = strconv.FormatInt(max(time.Until(dl).Milliseconds(), 0)+idleMargin.Milliseconds(), 10)
		}
		var got bool
		var set string
		if err := tx.QueryRowContext(ctx, `SELECT set_config('idle_in_transaction_session_timeout', COALESCE(?::text, current_setting('idle_in_transaction_session_timeout')), true), pg_try_advisory_xact_lock(hashtextextended('herd idempotency/' || current_schema() || '/' || ?::text || '/' || length(?::text) || '/' || ?::text || '/' || ?::text, 0))`,
			idle, strconv.FormatInt(tenant, 10), scope, scope, key).Scan(&set, &got); err != nil {
			return r, fmt.Errorf("claim idempotency key: lock: %w", err)
		} else if !got {
			r.State = herd.IdempotencyRunning // another process runs it
			return r, nil
		}
	}
	now := tx.now.UnixMilli()
	expires := now + herd.IdempotencyKeyTTL.Milliseconds()
	res, err := tx.ExecContext(ctx, `INSERT INTO idempotency_keys (tenant_id, scope, key, request_hash, status, locked_until, expires_at) VALUES (?, ?, ?, ?, 'running', 0, ?) ON CONFLICT DO NOTHING`,
		tenant, scope, key, hash, expires)
	if err != nil {
		return r, fmt.Errorf("claim idempotency key: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		k, err := scanKey(tx.QueryRowContext(ctx, keySelect, tenant, scope, key))
		if err != nil {
			return r, fmt.Errorf("read idempotency key: %w", err)
		}
		if r = k.result(hash, now); r.State != herd.IdempotencyNew {
			return r, nil
		}
		// Forgotten after 24 h: this request takes the key over.
		if _, err := tx.ExecContext(ctx, `UPDATE idempotency_keys SET request_hash = ?, status = 'running', response_status = 0, response_body = '', locked_until = 0, expires_at = ? WHERE tenant_id = ? AND scope = ? AND key = ?`,
			hash, expires, tenant, scope, key); err != nil {
			return r, fmt.Errorf("take over idempotency key: %w", err)
		}
	}
	claimed = true
	r.State = herd.IdempotencyNew
	r.Claim = &claim{s: s, id: id, tenant: tenant, scope: scope, key: key, ctx: ctx, tx: tx, slot: make(chan struct{}, 1)}
	return r, nil
}

// answered returns the stored answer of a key that is done, or the
// mismatch, from the read pool; a zero State when the key is not done.
func (s *IdempotencyService) answered(ctx context.Context, tenant int64, scope, key, hash string) (herd.IdempotencyResult, error) {
	k, err := scanKey(s.db.rdb.QueryRowContext(ctx, s.db.rebind(keySelect), tenant, scope, key))
	if errors.Is(err, sql.ErrNoRows) {
		return herd.IdempotencyResult{}, nil
	} else if err != nil {
		return herd.IdempotencyResult{}, fmt.Errorf("read idempotency key: %w", err)
	}
	if r := k.result(hash, s.db.Now().UnixMilli()); r.State == herd.IdempotencyReplay || r.State == herd.IdempotencyMismatch {
		return r, nil
	}
	return herd.IdempotencyResult{}, nil
}

// idleMargin is how long past its request's deadline a PostgreSQL claim
// may sit idle before the server ends it: by then the request's own
// context has rolled it back, unless its process can no longer say so.
const idleMargin = time.Second

const keySelect = `SELECT request_hash, status, response_status, response_body, locked_until, expires_at FROM idempotency_keys WHERE tenant_id = ? AND scope = ? AND key = ?`

// keyTenant is the tenant whose keys the actor's are (migration 0012): a
// super-admin's belong to no tenant, 0.
func keyTenant(a *herd.Actor) int64 {
	if a.Super {
		return 0
	}
	return a.TenantID
}

// storedKey is a row of idempotency_keys.
type storedKey struct {
	hash, status, body     string
	respStatus             int
	lockedUntil, expiresAt int64
}

func scanKey(row *sql.Row) (storedKey, error) {
	var k storedKey
	err := row.Scan(&k.hash, &k.status, &k.respStatus, &k.body, &k.lockedUntil, &k.expiresAt)
	return k, err
}

// result says what a request with hash finds in the stored key at now:
// New means it may take the key over.
func (k storedKey) result(hash string, now int64) herd.IdempotencyResult {
	// A row in 'running' was committed by a herd from before claims were
	// transactions; its lock tells whether that request may still run.
	// Every row of ours commits 'done'.
	legacyDead := k.status == "running" && k.lockedUntil <= now && k.hash == hash
	switch {
	case k.expiresAt <= now || legacyDead:
		return herd.IdempotencyResult{State: herd.IdempotencyNew}
	case k.hash != hash:
		return herd.IdempotencyResult{State: herd.IdempotencyMismatch}
	case k.status == "running":
		return herd.IdempotencyResult{State: herd.IdempotencyRunning}
	}
	return herd.IdempotencyResult{State: herd.IdempotencyReplay, Status: k.respStatus, Body: []byte(k.body)}
}

func (s *IdempotencyService) forget(id string) {
	s.mu.Lock()
	delete(s.live, id)
	s.mu.Unlock()
}

// claimKey is the context key of a request's claim.
type claimKey struct{}

// claim implements herd.IdempotencyClaim: the open transaction that holds
// the key's row, which the request's write transactions join.
type claim struct {
	s          *IdempotencyService
	id         string
	tenant     int64
	scope, key string
	ctx        context.Context // the request's, which the transaction began with
	tx         *Tx

	// slot admits one joined transaction at a time, as SQLite's single
	// writer would: a transaction's statements on the shared connection
	// must not interleave with another's.
	slot chan struct{}

	mu         sync.Mutex
	savepoints int
	broken     error // a joined transaction could not be ended: the claim must not commit
	ended      bool
}

// Context implements herd.IdempotencyClaim.
func (c *claim) Context(ctx context.Context) context.Context {
	return context.WithValue(ctx, claimKey{}, c)
}

// claimOf returns the claim that ctx carries on db, or nil.
func claimOf(ctx context.Context, db *DB) *claim {
	c, _ := ctx.Value(claimKey{}).(*claim)
	if c == nil || c.s.db != db {
		return nil
	}
	return c
}

var errClaimEnded = errors.New("sqldb: the request's idempotency claim has ended")

// join begins a write transaction inside the claim's: a savepoint, which
// the transaction's Commit releases and its Rollback rolls back to.
func (c *claim) join(ctx context.Context) (*Tx, error) {
	select {
	case c.slot <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("begin: %w", ctx.Err())
	}
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		<-c.slot
		return nil, fmt.Errorf("begin: %w", errClaimEnded)
	}
	c.savepoints++
	name := "herd_claim_" + strconv.Itoa(c.savepoints)
	c.mu.Unlock()
	if _, err := c.tx.tx.ExecContext(ctx, "SAVEPOINT "+name); err != nil {
		<-c.slot
		return nil, fmt.Errorf("begin: savepoint: %w", err)
	}
	return &Tx{tx: c.tx.tx, db: c.tx.db, now: c.tx.db.Now().UTC().Truncate(time.Millisecond), write: true, claim: c, savepoint: name}, nil
}

// end ends a joined transaction: commit releases its savepoint (its events
// wake the relay when the claim commits), a rollback undoes its writes and
// leaves the claim's usable. Either is final; the later Rollback that
// every service defers does nothing.
func (c *claim) end(tx *Tx, commit bool) error {
	if tx.ended {
		return nil
	}
	tx.ended = true
	defer func() { <-c.slot }()
	// Not the request's context: a cancelled request must still leave
	// the claim's transaction in a known state.
	ctx := context.Background()
	var err error
	if commit {
		_, err = c.tx.tx.ExecContext(ctx, "RELEASE SAVEPOINT "+tx.savepoint)
		if err == nil && tx.events {
			c.tx.events = true
		}
	} else if _, err = c.tx.tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT "+tx.savepoint); err == nil {
		_, err = c.tx.tx.ExecContext(ctx, "RELEASE SAVEPOINT "+tx.savepoint)
	}
	if err != nil {
		err = fmt.Errorf("end savepoint %s: %w", tx.savepoint, err)
		c.mu.Lock()
		c.broken = errors.Join(c.broken, err)
		c.mu.Unlock()
	}
	return err
}

// Complete implements herd.IdempotencyClaim.
func (c *claim) Complete(status int, body []byte) error {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return errClaimEnded
	}
	c.ended = true
	broken := c.broken
	c.mu.Unlock()
	defer c.s.forget(c.id)
	defer c.tx.Rollback() // after the commit, nothing
	// The slot is free unless a joined transaction is still open, which
	// must not be committed half done.
	select {
	case c.slot <- struct{}{}:
		defer func() { <-c.slot }() // a late join finds the claim ended
	default:
		return errors.New("sqldb: a write transaction of the request is still open; its answer is not stored")
	}
	if broken != nil {
		return broken
	}
	if _, err := c.tx.ExecContext(c.ctx, `UPDATE idempotency_keys SET status = 'done', response_status = ?, response_body = ? WHERE tenant_id = ? AND scope = ? AND key = ?`,
		status, string(body), c.tenant, c.scope, c.key); err != nil {
		return fmt.Errorf("store idempotent answer: %w", err)
	}
	if err := c.tx.Commit(); err != nil {
		return fmt.Errorf("commit idempotent request: %w", err)
	}
	return nil
}

// Release implements herd.IdempotencyClaim.
func (c *claim) Release() {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return
	}
	c.ended = true
	c.mu.Unlock()
	c.tx.Rollback()
	c.s.forget(c.id)
}

// PruneIdempotencyKeys forgets the keys older than their 24 hours.
func (db *DB) PruneIdempotencyKeys(ctx context.Context) (int64, error) {
	res, err := db.wdb.ExecContext(ctx, db.rebind(`DELETE FROM idempotency_keys WHERE expires_at <= ?`), db.Now().UnixMilli())
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
