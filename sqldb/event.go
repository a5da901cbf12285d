package sqldb

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

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
	const cols = 8
	const perStmt = herd.MaxQueryParams / cols
	for start := 0; start < len(evs); start += perStmt {
		chunk := evs[start:min(start+perStmt, len(evs))]
		var b strings.Builder
		b.WriteString(`INSERT INTO events (tenant_id, seq, type, subject_type, subject_id, path, payload, created_at) VALUES `)
		args := make([]any, 0, len(chunk)*cols)
		for i, e := range chunk {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString("(?,?,?,?,?,?,?,?)")
			e.TenantID, e.Seq, e.CreatedAt = tenantID, first+int64(start+i), tx.now
			args = append(args, e.TenantID, e.Seq, e.Type, e.SubjectType, e.SubjectID, e.Path, string(e.Payload), tx.now.UnixMilli())
		}
		if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
			return fmt.Errorf("insert events: %w", err)
		}
	}
	return nil
}

// ListEvents returns a tenant's events with seq > after, in sequence order.
// Nothing serves them over the API yet; tests read the outbox through it.
func (db *DB) ListEvents(ctx context.Context, tenantID, after int64, limit int) ([]*herd.Event, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT id, tenant_id, seq, type, subject_type, subject_id, path, payload, created_at FROM events WHERE tenant_id = ? AND seq > ? ORDER BY seq LIMIT ?`, tenantID, after, limit)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}
