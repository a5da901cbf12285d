package sqldb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/herd-iot/herd"
)

// newEvent builds an outbox event whose payload is v encoded as JSON.
func newEvent(typ, subjectType string, subjectID int64, path string, v any) *herd.Event {
	buf, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("sqldb: event payload: %v", err)) // our own types always encode
	}
	return &herd.Event{Type: typ, SubjectType: subjectType, SubjectID: subjectID, Path: path, Payload: buf}
}

// appendEventsByTenant writes events of several tenants, each tenant's in
// the order given, tenants in id order (the order writers lock them in).
func (tx *Tx) appendEventsByTenant(ctx context.Context, evs []*herd.Event) error {
	byTenant := map[int64][]*herd.Event{}
	var tenants []int64
	for _, ev := range evs {
		if byTenant[ev.TenantID] == nil {
			tenants = append(tenants, ev.TenantID)
		}
		byTenant[ev.TenantID] = append(byTenant[ev.TenantID], ev)
	}
	slices.Sort(tenants)
	for _, t := range tenants {
		if err := tx.appendEvents(ctx, t, byTenant[t]...); err != nil {
			return err
		}
	}
	return nil
}

// eventInsertColumns are the columns a new event is written with.
const eventInsertColumns = `tenant_id, seq, type, subject_type, subject_id, path, payload, created_at`

// appendEvents writes events of one tenant to the outbox inside tx. The
// tenant's sequence is advanced by an UPDATE of the tenant row, which every
// writer of that tenant takes in its transaction: sequence numbers are handed
// out in commit order, without holes, and never go back.
func (tx *Tx) appendEvents(ctx context.Context, tenantID int64, evs ...*herd.Event) error {
	if len(evs) == 0 {
		return nil
	}
	var last int64
	if err := tx.QueryRowContext(ctx, `UPDATE tenants SET event_seq = event_seq + ? WHERE id = ? RETURNING event_seq`, len(evs), tenantID).Scan(&last); err != nil {
		return fmt.Errorf("advance event sequence: %w", err)
	}
	tx.events = true
	first := last - int64(len(evs)) + 1
	for i, e := range evs {
		e.TenantID, e.Seq, e.CreatedAt = tenantID, first+int64(i), tx.now
	}
	if tx.db.dialect == Postgres {
		return tx.insertEventsArrays(ctx, evs)
	}
	const cols = 8
	const perStmt = herd.MaxQueryParams / cols
	for start := 0; start < len(evs); start += perStmt {
		chunk := evs[start:min(start+perStmt, len(evs))]
		var b strings.Builder
		b.WriteString(`INSERT INTO events (` + eventInsertColumns + `) VALUES `)
		args := make([]any, 0, len(chunk)*cols)
		for i, e := range chunk {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString("(?,?,?,?,?,?,?,?)")
			args = append(args, e.TenantID, e.Seq, e.Type, e.SubjectType, e.SubjectID, e.Path, string(e.Payload), tx.now.UnixMilli())
		}
		if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
			return fmt.Errorf("insert events: %w", err)
		}
	}
	return nil
}

// EventService implements herd.EventService.
type EventService struct{ db *DB }

var _ herd.EventService = (*EventService)(nil)

// NewEventService returns an EventService on db.
func NewEventService(db *DB) *EventService { return &EventService{db: db} }

// FindEvents implements herd.EventService. It reads in one snapshot, so
// the head and the events agree.
func (s *EventService) FindEvents(ctx context.Context, tenantID, after int64, limit int) (_ *herd.EventPage, err error) {
	defer wrapOp("sqldb.FindEvents", &err)
	if limit < 1 || limit > herd.MaxEventsPage {
		return nil, herd.Errorf(herd.EINVALIDLIMIT, "limit must be from 1 to %d", herd.MaxEventsPage)
	}
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.EventPage, error) {
		if !a.SeesTenant(tenantID) {
			return nil, herd.Errorf(herd.ENOTFOUND, "tenant %d not found", tenantID)
		}
		var head, pruned int64
		err := tx.QueryRowContext(ctx, `SELECT t.event_seq, COALESCE(c.pruned_seq, 0) FROM tenants t LEFT JOIN outbox_cursors c ON c.tenant_id = t.id WHERE t.id = ?`, tenantID).Scan(&head, &pruned)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, herd.Errorf(herd.ENOTFOUND, "tenant %d not found", tenantID)
		} else if err != nil {
			return nil, err
		}
		if after < 0 {
			// "From the head": no events, the place to follow from.
			return &herd.EventPage{Items: []*herd.Event{}, Head: head, NextAfter: head}, nil
		}
		if after < pruned {
			return nil, herd.Errorf(herd.ERESYNC, "events after %d are gone (kept up to the retention; the oldest left follows %d): reload through the list endpoints, then follow the log from its head, %d", after, pruned, head)
		} else if after > head {
			return nil, herd.Errorf(herd.ERESYNC, "after %d is past this tenant's head, %d: the cursor is not from this log; reload and start from the head", after, head)
		}
		page := &herd.EventPage{Items: []*herd.Event{}, Head: head}
		upper := min(head, after+herd.EventsScanWindow)
		scope := herd.Scope{TenantID: tenantID, Paths: []string{"/"}}
		if !a.Super {
			scope = a.Scope(herd.RoleViewer)
		}
		if scope.Empty() {
			page.NextAfter = upper
			return page, nil
		}
		var b strings.Builder
		b.WriteString(`SELECT id, tenant_id, seq, type, subject_type, subject_id, path, payload, created_at FROM events WHERE `)
		args := whereScope(&b, scope)
		b.WriteString(` AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?`)
		rows, err := tx.QueryContext(ctx, b.String(), append(args, after, upper, limit)...)
		if err != nil {
			return nil, err
		}
		if page.Items, err = scanEvents(rows); err != nil {
			return nil, err
		}
		if page.Items == nil {
			page.Items = []*herd.Event{}
		}
		page.NextAfter = upper
		if len(page.Items) == limit {
			page.NextAfter = page.Items[len(page.Items)-1].Seq
		}
		return page, nil
	})
}

// PruneEvents deletes the events committed before cut that the relay has
// published, tenant by tenant, with the finished webhook deliveries of
// those events, and moves each tenant's horizon: a caller of the log whose
// place is older gets ERESYNC. Events with a delivery still pending stay
// (with the retention at or above the webhooks' 72 hours there is none).
func (db *DB) PruneEvents(ctx context.Context, cut time.Time) (_ int64, err error) {
	defer wrapOp("sqldb.PruneEvents", &err)
	rows, err := db.readPool().QueryContext(ctx, db.rebind(`SELECT tenant_id, published_seq, pruned_seq FROM outbox_cursors WHERE published_seq > pruned_seq`))
	if err != nil {
		return 0, err
	}
	type cursor struct{ tenant, published, pruned int64 }
	var cs []cursor
	for rows.Next() {
		var c cursor
		if err := rows.Scan(&c.tenant, &c.published, &c.pruned); err != nil {
			rows.Close()
			return 0, err
		}
		cs = append(cs, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	var total int64
	for _, c := range cs {
		n, err := db.pruneTenantEvents(ctx, c.tenant, c.published, c.pruned, cut)
		if err != nil {
			return total, fmt.Errorf("prune events of tenant %d: %w", c.tenant, err)
		}
		total += n
	}
	return total, nil
}

func (db *DB) pruneTenantEvents(ctx context.Context, tenant, published, pruned int64, cut time.Time) (int64, error) {
	tx, err := db.beginBgTx(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var upto sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT MAX(seq) FROM events WHERE tenant_id = ? AND seq > ? AND seq <= ? AND created_at < ?`, tenant, pruned, published, cut.UnixMilli()).Scan(&upto); err != nil {
		return 0, err
	}
	if !upto.Valid {
		return 0, nil
	}
	// An event still waiting for a webhook stays, and so does everything
	// after it: the horizon is one line.
	var pending sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT MIN(e.seq) FROM events e JOIN webhook_deliveries d ON d.event_id = e.id WHERE e.tenant_id = ? AND e.seq > ? AND e.seq <= ? AND d.status = 'pending'`, tenant, pruned, upto.Int64).Scan(&pending); err != nil {
		return 0, err
	}
	if pending.Valid {
		upto.Int64 = pending.Int64 - 1
		if upto.Int64 <= pruned {
			return 0, nil
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE event_id IN (SELECT id FROM events WHERE tenant_id = ? AND seq > ? AND seq <= ?)`, tenant, pruned, upto.Int64); err != nil {
		return 0, err
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE tenant_id = ? AND seq > ? AND seq <= ?`, tenant, pruned, upto.Int64)
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE outbox_cursors SET pruned_seq = ? WHERE tenant_id = ? AND pruned_seq < ?`, upto.Int64, tenant, upto.Int64); err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	return n, tx.Commit()
}

// Head returns a tenant's last committed sequence number. It checks no
// actor: callers have (the stream's hello).
func (s *EventService) Head(ctx context.Context, tenantID int64) (_ int64, err error) {
	defer wrapOp("sqldb.Head", &err)
	var head int64
	err = s.db.rdb.QueryRowContext(ctx, s.db.rebind(`SELECT event_seq FROM tenants WHERE id = ?`), tenantID).Scan(&head)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, herd.Errorf(herd.ENOTFOUND, "tenant %d not found", tenantID)
	}
	return head, err
}

// AppendStoreEvent writes an event about the store itself (its id
// headroom, say) into every tenant's log, at the tenant's root, so that
// tenant admins, their webhooks and streams see it.
func (db *DB) AppendStoreEvent(ctx context.Context, typ string, payload any) (err error) {
	defer wrapOp("sqldb.AppendStoreEvent", &err)
	tx, err := db.beginBgTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT t.id, n.path FROM tenants t JOIN nodes n ON n.id = t.root_node_id ORDER BY t.id`)
	if err != nil {
		return err
	}
	var evs []*herd.Event
	for rows.Next() {
		var tenant int64
		var path string
		if err := rows.Scan(&tenant, &path); err != nil {
			rows.Close()
			return err
		}
		ev := newEvent(typ, herd.EventSubjectStore, 0, path, payload)
		ev.TenantID = tenant
		evs = append(evs, ev)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if err := tx.appendEventsByTenant(ctx, evs); err != nil {
		return err
	}
	return tx.Commit()
}

// IDSample is a reading of one of herd's own id columns.
type IDSample struct {
	Table, Column string
	At            time.Time
	Used          int64
}

// RecordIDSamples stores readings of herd's own id columns and forgets
// those older than a month.
func (db *DB) RecordIDSamples(ctx context.Context, samples []IDSample) (err error) {
	defer wrapOp("sqldb.RecordIDSamples", &err)
	tx, err := db.beginBgTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, s := range samples {
		if _, err := tx.ExecContext(ctx, `INSERT INTO id_samples (tbl, col, at, used) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`, s.Table, s.Column, s.At.UnixMilli(), s.Used); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM id_samples WHERE at < ?`, tx.now.Add(-30*24*time.Hour).UnixMilli()); err != nil {
		return err
	}
	return tx.Commit()
}

// OldestIDSamples returns, per column, the oldest reading since since.
func (db *DB) OldestIDSamples(ctx context.Context, since time.Time) (_ []IDSample, err error) {
	defer wrapOp("sqldb.OldestIDSamples", &err)
	rows, err := db.rdb.QueryContext(ctx, db.rebind(`SELECT s.tbl, s.col, s.at, s.used FROM id_samples s
JOIN (SELECT tbl, col, MIN(at) AS at FROM id_samples WHERE at >= ? GROUP BY tbl, col) o ON o.tbl = s.tbl AND o.col = s.col AND o.at = s.at`), since.UnixMilli())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []IDSample
	for rows.Next() {
		var s IDSample
		var at int64
		if err := rows.Scan(&s.Table, &s.Column, &at, &s.Used); err != nil {
			return nil, err
		}
		s.At = msToTime(at)
		out = append(out, s)
	}
	return out, rows.Err()
}
