package sqldb

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/herd-iot/herd"
)

// OutboxService implements herd.OutboxService. Leases are kept in unix
// milliseconds of the DB's clock: relays sharing a store must share a
// clock within a fraction of the lease.
type OutboxService struct{ db *DB }

var _ herd.OutboxService = (*OutboxService)(nil)

// NewOutboxService returns an OutboxService on db.
func NewOutboxService(db *DB) *OutboxService { return &OutboxService{db: db} }

// ClaimOutbox implements herd.OutboxService. Tenants whose lease is oldest
// come first (never leased, run out, then the least recently renewed), so
// a relay's busy tenants, renewed by every mark, cannot keep others out of
// its claims. On PostgreSQL the candidate
// cursors are locked with SKIP LOCKED, so relays claiming at once split the
// tenants instead of queueing on each other; the lease condition is checked
// again on the locked row, so two relays never both win a tenant. SQLite
// has one writer and needs neither.
func (s *OutboxService) ClaimOutbox(ctx context.Context, owner string, lease time.Duration, max int) (_ []herd.OutboxClaim, err error) {
	defer wrapOp("sqldb.ClaimOutbox", &err)
	if owner == "" || max < 1 {
		return nil, fmt.Errorf("owner and max required")
	}
	tx, err := s.db.beginBgTx(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	now := tx.now.UnixMilli()
	lock := ""
	if s.db.dialect == Postgres {
		lock = " FOR UPDATE OF c SKIP LOCKED"
	}
	rows, err := tx.QueryContext(ctx, `UPDATE outbox_cursors SET lease_owner = ?, lease_until = ?
WHERE (lease_owner = ? OR lease_until < ?) AND tenant_id IN (
  SELECT c.tenant_id FROM outbox_cursors c JOIN tenants t ON t.id = c.tenant_id
  WHERE t.event_seq > c.published_seq AND (c.lease_owner = ? OR c.lease_until < ?)
  ORDER BY c.lease_until, c.tenant_id LIMIT ?`+lock+`)
RETURNING tenant_id, published_seq`, owner, now+lease.Milliseconds(), owner, now, owner, now, max)
	if err != nil {
		return nil, fmt.Errorf("claim outbox: %w", err)
	}
	var out []herd.OutboxClaim
	for rows.Next() {
		var c herd.OutboxClaim
		if err := rows.Scan(&c.TenantID, &c.PublishedSeq); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b herd.OutboxClaim) int { return cmp.Compare(a.TenantID, b.TenantID) })
	return out, nil
}

// OutboxEvents implements herd.OutboxService. Sequence numbers are handed
// out under the tenant row's lock, which a writer holds until it commits,
// so the committed events of a tenant are always a prefix of its sequence:
// reading after the cursor never skips one that commits later.
func (s *OutboxService) OutboxEvents(ctx context.Context, tenantID, after int64, limit int) (_ []*herd.Event, err error) {
	defer wrapOp("sqldb.OutboxEvents", &err)
	q := s.db.rebind(`SELECT id, tenant_id, seq, type, subject_type, subject_id, path, payload, created_at FROM events WHERE tenant_id = ? AND seq > ? ORDER BY seq LIMIT ?`)
	rows, err := s.db.readPool().QueryContext(ctx, q, tenantID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("outbox events: %w", err)
	}
	return scanEvents(rows)
}

// MarkPublished implements herd.OutboxService.
func (s *OutboxService) MarkPublished(ctx context.Context, owner string, tenantID, seq int64, lease time.Duration) (err error) {
	defer wrapOp("sqldb.MarkPublished", &err)
	now := s.db.Now().UnixMilli()
	res, err := s.db.bdb.ExecContext(ctx, s.db.rebind(`UPDATE outbox_cursors SET published_seq = ?, lease_until = ? WHERE tenant_id = ? AND lease_owner = ? AND published_seq <= ?`),
		seq, now+lease.Milliseconds(), tenantID, owner, seq)
	if err != nil {
		return fmt.Errorf("mark published: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("tenant %d: %w", tenantID, herd.ErrLeaseLost)
	}
	return nil
}

// ReleaseOutbox implements herd.OutboxService.
func (s *OutboxService) ReleaseOutbox(ctx context.Context, owner string) (err error) {
	defer wrapOp("sqldb.ReleaseOutbox", &err)
	_, err = s.db.bdb.ExecContext(ctx, s.db.rebind(`UPDATE outbox_cursors SET lease_owner = '', lease_until = 0 WHERE lease_owner = ?`), owner)
	if err != nil {
		return fmt.Errorf("release outbox: %w", err)
	}
	return nil
}

// OutboxStats implements herd.OutboxService.
func (s *OutboxService) OutboxStats(ctx context.Context) (_ herd.OutboxStats, err error) {
	defer wrapOp("sqldb.OutboxStats", &err)
	var st herd.OutboxStats
	var oldest sql.NullInt64
	err = s.db.rdb.QueryRowContext(ctx, `SELECT COALESCE(SUM(t.event_seq - c.published_seq), 0),
  MIN((SELECT e.created_at FROM events e WHERE e.tenant_id = c.tenant_id AND e.seq = c.published_seq + 1))
FROM outbox_cursors c JOIN tenants t ON t.id = c.tenant_id WHERE t.event_seq > c.published_seq`).Scan(&st.Pending, &oldest)
	if err != nil {
		return st, fmt.Errorf("outbox stats: %w", err)
	}
	if oldest.Valid {
		st.Oldest = msToTime(oldest.Int64)
	}
	return st, nil
}

// scanEvents reads rows of the events table's columns in the order
// OutboxEvents selects them, and closes rows.
func scanEvents(rows *sql.Rows) ([]*herd.Event, error) {
	defer rows.Close()
	var out []*herd.Event
	for rows.Next() {
		var e herd.Event
		var payload string
		var created int64
		if err := rows.Scan(&e.ID, &e.TenantID, &e.Seq, &e.Type, &e.SubjectType, &e.SubjectID, &e.Path, &payload, &created); err != nil {
			return nil, err
		}
		e.Payload, e.CreatedAt = json.RawMessage(payload), msToTime(created)
		out = append(out, &e)
	}
	return out, rows.Err()
}

// ApplyOnce runs effect in a write transaction that first records
// (consumer, eventID) under the table's primary key. If the pair was there
// already, the event was applied before: nothing runs and applied is false.
// The record and the effect commit together or not at all, so a crash
// between them cannot leave an effect without its record or the reverse.
// Concurrent calls for one pair are settled by the key: on PostgreSQL the
// second insert waits for the first transaction and then finds the row.
func (db *DB) ApplyOnce(ctx context.Context, consumer string, eventID int64, effect func(ctx context.Context, tx *Tx) error) (applied bool, err error) {
	defer wrapOp("sqldb.ApplyOnce", &err)
	var once func(context.Context, *Tx, []bool) error
	if effect != nil {
		once = func(ctx context.Context, tx *Tx, applied []bool) error {
			if !applied[0] {
				return nil
			}
			return effect(ctx, tx)
		}
	}
	a, err := db.ApplyOnceBatch(ctx, consumer, []int64{eventID}, once)
	if err != nil {
		return false, err
	}
	return a[0], nil
}

// ApplyOnceBatch is ApplyOnce for several events in one transaction:
// effect runs once, told which events are new (applied[i] for ids[i]),
// and sees the records of the new ones already written. Records are
// written in id order, so two batches holding the same events cannot
// deadlock on each other.
func (db *DB) ApplyOnceBatch(ctx context.Context, consumer string, ids []int64, effect func(ctx context.Context, tx *Tx, applied []bool) error) (_ []bool, err error) {
	defer wrapOp("sqldb.ApplyOnceBatch", &err)
	tx, err := db.beginBgTx(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	order := make([]int, len(ids))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(ids[a], ids[b]) })
	applied := make([]bool, len(ids))
	seen := map[int64]bool{}
	for _, i := range order {
		if seen[ids[i]] {
			continue // the same event twice in one batch: the first applies it
		}
		seen[ids[i]] = true
		res, err := tx.execCached(ctx, `INSERT INTO processed_events (consumer, event_id, processed_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
			consumer, ids[i], tx.now.UnixMilli())
		if err != nil {
			return nil, fmt.Errorf("record processed event: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return nil, err
		}
		applied[i] = n == 1
	}
	if effect != nil {
		if err := effect(ctx, tx, applied); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit effects: %w", err)
	}
	return applied, nil
}

// PruneProcessed forgets consumers' records older than before. Call it
// with a time older than anything the stream still holds, so that a replay
// of the stream finds every event it could deliver again.
func (db *DB) PruneProcessed(ctx context.Context, before time.Time) (_ int64, err error) {
	defer wrapOp("sqldb.PruneProcessed", &err)
	res, err := db.wdb.ExecContext(ctx, db.rebind(`DELETE FROM processed_events WHERE processed_at < ?`), before.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("prune processed events: %w", err)
	}
	return res.RowsAffected()
}

// eventWaiters wakes those waiting for committed events (the relay) as
// soon as a transaction that wrote events commits, so that events of this
// process need no polling to leave it.
type eventWaiters struct {
	mu sync.Mutex
	ch []chan struct{}
}

// EventsCommitted returns a channel that receives (without blocking the
// writer: it holds one wake-up at most) after each commit of events by
// this process, and a function that stops it.
func (db *DB) EventsCommitted() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	w := &db.waiters
	w.mu.Lock()
	w.ch = append(w.ch, ch)
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.ch = slices.DeleteFunc(w.ch, func(c chan struct{}) bool { return c == ch })
	}
}

func (w *eventWaiters) wake() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ch := range w.ch {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
