package sqldb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/herd-iot/herd"
)

// WebhookService implements herd.WebhookService and herd.WebhookQueue.
type WebhookService struct{ db *DB }

var (
	_ herd.WebhookService = (*WebhookService)(nil)
	_ herd.WebhookQueue   = (*WebhookService)(nil)
)

// NewWebhookService returns a WebhookService on db.
func NewWebhookService(db *DB) *WebhookService { return &WebhookService{db: db} }

// webhookEvent is a subscription as its events carry it: never the secret.
// The URL is cut to its scheme and host: many receivers carry a
// capability in the path or query, and viewers read the event log.
func webhookEvent(typ string, w *herd.Webhook) *herd.Event {
	c := *w
	c.Secret = ""
	if u, err := url.Parse(w.URL); err == nil {
		c.URL = u.Scheme + "://" + u.Host + "/…"
	}
	return newEvent(typ, herd.EventSubjectWebhook, w.ID, w.Path, &c)
}

// CreateWebhook implements herd.WebhookService.
func (s *WebhookService) CreateWebhook(ctx context.Context, w *herd.Webhook) (err error) {
	defer wrapOp("sqldb.CreateWebhook", &err)
	a, err := actor(ctx)
	if err != nil {
		return err
	} else if err := w.Validate(); err != nil {
		return err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	n, err := tx.findNode(ctx, a, w.NodeID)
	if err != nil {
		return err
	} else if !a.Allows(n.TenantID, n.Path, herd.RoleAdmin) {
		return herd.Errorf(herd.EFORBIDDEN, "admin role on node %d required", n.ID)
	}
	var b [24]byte
	rand.Read(b[:])
	w.Secret = "whsec_" + hex.EncodeToString(b[:])
	w.TenantID, w.Path, w.Status, w.DisabledReason, w.CreatedAt = n.TenantID, n.Path, herd.WebhookActive, "", tx.now
	types, _ := json.Marshal(w.EventTypes)
	if w.ID, err = tx.insertID(ctx, `INSERT INTO webhooks (tenant_id, node_id, url, event_types, secret, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		w.TenantID, w.NodeID, w.URL, string(types), w.Secret, w.Status, tx.now.UnixMilli()); err != nil {
		return err
	}
	if err := tx.appendEvents(ctx, w.TenantID, webhookEvent(herd.EventWebhookCreated, w)); err != nil {
		return err
	}
	return tx.Commit()
}

const webhookColumns = `w.id, w.tenant_id, w.node_id, n.path, w.url, w.event_types, w.status, w.disabled_reason, w.created_at`

func scanWebhook(sc rowScanner) (*herd.Webhook, error) {
	var w herd.Webhook
	var types string
	var created int64
	if err := sc.Scan(&w.ID, &w.TenantID, &w.NodeID, &w.Path, &w.URL, &types, &w.Status, &w.DisabledReason, &created); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(types), &w.EventTypes); err != nil {
		return nil, fmt.Errorf("webhook %d event types: %w", w.ID, err)
	}
	w.CreatedAt = msToTime(created)
	return &w, nil
}

// findWebhook returns a subscription the actor administers.
func (tx *Tx) findWebhook(ctx context.Context, a *herd.Actor, id int64) (*herd.Webhook, error) {
	cond, args := tenantCond(a, "w.tenant_id")
	w, err := scanWebhook(tx.QueryRowContext(ctx, `SELECT `+webhookColumns+` FROM webhooks w JOIN nodes n ON n.id = w.node_id AND n.tenant_id = w.tenant_id WHERE w.id = ? AND NOT w.deleted`+cond, append([]any{id}, args...)...))
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !a.Allows(w.TenantID, w.Path, herd.RoleViewer)) {
		return nil, herd.Errorf(herd.ENOTFOUND, "webhook %d not found", id)
	} else if err != nil {
		return nil, err
	} else if !a.Allows(w.TenantID, w.Path, herd.RoleAdmin) {
		return nil, herd.Errorf(herd.EFORBIDDEN, "admin role on node %d required", w.NodeID)
	}
	return w, nil
}

// FindWebhooks implements herd.WebhookService.
func (s *WebhookService) FindWebhooks(ctx context.Context) (_ []*herd.Webhook, err error) {
	defer wrapOp("sqldb.FindWebhooks", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) ([]*herd.Webhook, error) {
		q, args := `SELECT `+webhookColumns+` FROM webhooks w JOIN nodes n ON n.id = w.node_id AND n.tenant_id = w.tenant_id WHERE NOT w.deleted`, []any{}
		if !a.Super {
			q, args = q+` AND w.tenant_id = ?`, append(args, a.TenantID)
		}
		rows, err := tx.QueryContext(ctx, q+` ORDER BY w.id`, args...)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		out := []*herd.Webhook{}
		for rows.Next() {
			w, err := scanWebhook(rows)
			if err != nil {
				return nil, err
			}
			if a.Allows(w.TenantID, w.Path, herd.RoleAdmin) {
				out = append(out, w)
			}
		}
		return out, rows.Err()
	})
}

// FindWebhookByID implements herd.WebhookService.
func (s *WebhookService) FindWebhookByID(ctx context.Context, id int64) (_ *herd.Webhook, err error) {
	defer wrapOp("sqldb.FindWebhookByID", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.Webhook, error) { return tx.findWebhook(ctx, a, id) })
}

// DeleteWebhook implements herd.WebhookService. The row stays, marked
// deleted, so its deliveries keep their history; those still waiting die.
func (s *WebhookService) DeleteWebhook(ctx context.Context, id int64) (err error) {
	defer wrapOp("sqldb.DeleteWebhook", &err)
	a, err := actor(ctx)
	if err != nil {
		return err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	w, err := tx.findWebhook(ctx, a, id)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE webhooks SET deleted = TRUE, status = ? WHERE id = ? AND tenant_id = ?`, herd.WebhookDisabled, id, w.TenantID); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET status = ?, last_reason = 'subscription deleted' WHERE webhook_id = ? AND status = ?`, herd.DeliveryDead, id, herd.DeliveryPending); err != nil {
		return err
	}
	w.Status = herd.WebhookDisabled
	if err := tx.appendEvents(ctx, w.TenantID, webhookEvent(herd.EventWebhookDeleted, w)); err != nil {
		return err
	}
	return tx.Commit()
}

const deliveryColumns = `d.id, d.webhook_id, d.event_id, d.event_type, d.status, d.attempts, d.next_at, d.last_status, d.last_reason, d.created_at, d.delivered_at`

// FindDeliveries implements herd.WebhookService.
func (s *WebhookService) FindDeliveries(ctx context.Context, webhookID int64, status string, limit int) (_ []*herd.WebhookDelivery, err error) {
	defer wrapOp("sqldb.FindDeliveries", &err)
	switch status {
	case "", herd.DeliveryPending, herd.DeliveryDelivered, herd.DeliveryDead:
	default:
		return nil, herd.Errorf(herd.EINVALID, "status must be pending, delivered or dead, not %q", status)
	}
	if limit < 1 || limit > 1000 {
		return nil, herd.Errorf(herd.EINVALIDLIMIT, "limit must be from 1 to 1,000")
	}
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) ([]*herd.WebhookDelivery, error) {
		w, err := tx.findWebhook(ctx, a, webhookID)
		if err != nil {
			return nil, err
		}
		// A delivery's tenant is its subscription's.
		q, args := `SELECT `+deliveryColumns+` FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE d.webhook_id = ? AND w.tenant_id = ?`, []any{webhookID, w.TenantID}
		if status != "" {
			q, args = q+` AND d.status = ?`, append(args, status)
		}
		rows, err := tx.QueryContext(ctx, q+` ORDER BY d.id DESC LIMIT ?`, append(args, limit)...)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		out := []*herd.WebhookDelivery{}
		for rows.Next() {
			var d herd.WebhookDelivery
			var next, created int64
			var delivered sql.NullInt64
			if err := rows.Scan(&d.ID, &d.WebhookID, &d.EventID, &d.EventType, &d.Status, &d.Attempts, &next, &d.LastStatus, &d.LastReason, &created, &delivered); err != nil {
				return nil, err
			}
			d.NextAt, d.CreatedAt = msToTime(next), msToTime(created)
			if delivered.Valid {
				t := msToTime(delivered.Int64)
				d.DeliveredAt = &t
			}
			out = append(out, &d)
		}
		return out, rows.Err()
	})
}

// RedriveWebhook implements herd.WebhookService.
func (s *WebhookService) RedriveWebhook(ctx context.Context, id int64) (_ int, err error) {
	defer wrapOp("sqldb.RedriveWebhook", &err)
	a, err := actor(ctx)
	if err != nil {
		return 0, err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	w, err := tx.findWebhook(ctx, a, id)
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE webhooks SET status = ?, disabled_reason = '', failing_since = 0 WHERE id = ? AND tenant_id = ?`, herd.WebhookActive, id, w.TenantID); err != nil {
		return 0, err
	}
	res, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET status = ?, next_at = ?, retry_from = ? WHERE webhook_id = ? AND status = ?`,
		herd.DeliveryPending, tx.now.UnixMilli(), tx.now.UnixMilli(), id, herd.DeliveryDead)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	w.Status, w.DisabledReason = herd.WebhookActive, ""
	ev := newEvent(herd.EventWebhookRedriven, herd.EventSubjectWebhook, w.ID, w.Path, map[string]any{"webhook_id": fmt.Sprint(w.ID), "redriven": n})
	if err := tx.appendEvents(ctx, w.TenantID, ev); err != nil {
		return 0, err
	}
	return int(n), tx.Commit()
}

// EnqueueWebhooks implements herd.WebhookQueue. The subscriptions' node
// paths are read now, so a subscription follows its node's moves; one
// created after the event was committed does not get it.
func (s *WebhookService) EnqueueWebhooks(ctx context.Context, consumer string, evs []*herd.Event, owner string, lease time.Duration) (_ []bool, _ []*herd.DeliveryJob, err error) {
	defer wrapOp("sqldb.EnqueueWebhooks", &err)
	ids := make([]int64, len(evs))
	for i, ev := range evs {
		ids[i] = ev.ID
	}
	var jobs []*herd.DeliveryJob
	applied, err := s.db.ApplyOnceBatch(ctx, consumer, ids, func(ctx context.Context, tx *Tx, applied []bool) error {
		jobs = jobs[:0]
		hooks := map[int64][]*activeWebhook{} // by tenant, read once a batch
		now := tx.now.UnixMilli()
		for i, ev := range evs {
			if !applied[i] {
				continue
			}
			ws, ok := hooks[ev.TenantID]
			if !ok {
				var err error
				if ws, err = tx.activeWebhooks(ctx, ev.TenantID); err != nil {
					return err
				}
				hooks[ev.TenantID] = ws
			}
			var body []byte
			for _, w := range ws {
				if !w.Wants(ev) || ev.CreatedAt.Before(w.CreatedAt) {
					continue
				}
				var id int64
				err := tx.QueryRowContext(ctx, `INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, status, next_at, claim_owner, created_at, retry_from) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id`,
					w.ID, ev.ID, ev.Type, now+lease.Milliseconds(), owner, now, now).Scan(&id)
				if errors.Is(err, sql.ErrNoRows) {
					continue // queued before
				} else if err != nil {
					return fmt.Errorf("queue delivery: %w", err)
				}
				if body == nil {
					if body, err = json.Marshal(ev); err != nil {
						return err
					}
				}
				jobs = append(jobs, &herd.DeliveryJob{DeliveryID: id, WebhookID: w.ID, EventID: ev.ID, URL: w.URL, Secret: w.secret,
					Body: body, RetryFrom: tx.now, EventAt: ev.CreatedAt, FailingSince: w.failingSince, ClaimedUntil: msToTime(now + lease.Milliseconds())})
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return applied, jobs, nil
}

// activeWebhook is a subscription with what its deliveries need.
type activeWebhook struct {
	*herd.Webhook
	secret       string
	failingSince time.Time
}

// activeWebhooks returns a tenant's active subscriptions.
// On PostgreSQL the rows are locked for share until the queueing commits:
// a delete or disable of a subscription waits for it, and then finds the
// deliveries just queued among those it dead-letters, instead of leaving
// them pending for a subscription no dispatcher serves.
func (tx *Tx) activeWebhooks(ctx context.Context, tenantID int64) ([]*activeWebhook, error) {
	lock := ""
	if tx.db.dialect == Postgres {
		lock = " FOR SHARE OF w"
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+webhookColumns+`, w.secret, w.failing_since FROM webhooks w JOIN nodes n ON n.id = w.node_id AND n.tenant_id = w.tenant_id WHERE w.tenant_id = ? AND w.status = 'active' AND NOT w.deleted`+lock, tenantID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*activeWebhook
	for rows.Next() {
		var a activeWebhook
		var failing int64
		var err error
		a.Webhook, err = scanWebhook(scanFunc(func(dest ...any) error { return rows.Scan(append(dest, &a.secret, &failing)...) }))
		if err != nil {
			return nil, err
		}
		if failing != 0 {
			a.failingSince = msToTime(failing)
		}
		out = append(out, &a)
	}
	return out, rows.Err()
}

// scanFunc lets a function stand where a row's Scan is expected.
type scanFunc func(dest ...any) error

func (f scanFunc) Scan(dest ...any) error { return f(dest...) }

// ClaimDeliveries implements herd.WebhookQueue.
func (s *WebhookService) ClaimDeliveries(ctx context.Context, owner string, lease time.Duration, max int) (_ []*herd.DeliveryJob, err error) {
	defer wrapOp("sqldb.ClaimDeliveries", &err)
	tx, err := s.db.beginBgTx(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	lock := ""
	if s.db.dialect == Postgres {
		lock = " FOR UPDATE OF d SKIP LOCKED"
	}
	now := tx.now.UnixMilli()
	// The status is written out, not a parameter: only then can both
	// engines use the partial index of pending deliveries (a generic plan
	// cannot prove that a parameter equals 'pending').
	rows, err := tx.QueryContext(ctx, `UPDATE webhook_deliveries SET next_at = ?, claim_owner = ? WHERE id IN (
  SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
  WHERE d.status = 'pending' AND d.next_at <= ? AND w.status = 'active' ORDER BY d.next_at LIMIT ?`+lock+`)
RETURNING id`, now+lease.Milliseconds(), owner, now, max)
	if err != nil {
		return nil, fmt.Errorf("claim deliveries: %w", err)
	}
	var ids []string
	var args []any
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids, args = append(ids, "?"), append(args, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(ids) == 0 {
		return nil, err
	}
	rows, err = tx.QueryContext(ctx, `SELECT d.id, d.webhook_id, d.event_id, d.attempts, d.last_reason, d.retry_from, d.next_at, w.url, w.secret, w.failing_since,
  e.id, e.tenant_id, e.seq, e.type, e.subject_type, e.subject_id, e.path, e.payload, e.created_at
FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id JOIN events e ON e.id = d.event_id
WHERE d.id IN (`+strings.Join(ids, ",")+`) ORDER BY d.next_at, d.id`, args...)
	if err != nil {
		return nil, fmt.Errorf("read claimed deliveries: %w", err)
	}
	defer rows.Close()
	var out []*herd.DeliveryJob
	for rows.Next() {
		var j herd.DeliveryJob
		var e herd.Event
		var retryFrom, claimedUntil, failing, created int64
		var payload string
		if err := rows.Scan(&j.DeliveryID, &j.WebhookID, &j.EventID, &j.Attempts, &j.LastReason, &retryFrom, &claimedUntil, &j.URL, &j.Secret, &failing,
			&e.ID, &e.TenantID, &e.Seq, &e.Type, &e.SubjectType, &e.SubjectID, &e.Path, &payload, &created); err != nil {
			return nil, err
		}
		e.Payload, e.CreatedAt = json.RawMessage(payload), msToTime(created)
		if j.Body, err = json.Marshal(&e); err != nil {
			return nil, err
		}
		j.RetryFrom, j.EventAt, j.ClaimedUntil = msToTime(retryFrom), e.CreatedAt, msToTime(claimedUntil)
		if failing != 0 {
			j.FailingSince = msToTime(failing)
		}
		out = append(out, &j)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	return out, tx.Commit()
}

// ReleaseClaims implements herd.WebhookQueue.
func (s *WebhookService) ReleaseClaims(ctx context.Context, owner string, until time.Time) (err error) {
	defer wrapOp("sqldb.ReleaseClaims", &err)
	now := s.db.Now().UnixMilli()
	_, err = s.db.bdb.ExecContext(ctx, s.db.rebind(`UPDATE webhook_deliveries SET next_at = ? WHERE status = 'pending' AND claim_owner = ? AND next_at > ? AND next_at < ?`), now, owner, now, until.UnixMilli())
	if err != nil {
		return fmt.Errorf("release webhook claims: %w", err)
	}
	return nil
}

// RecordAttempts implements herd.WebhookQueue, in one transaction.
func (s *WebhookService) RecordAttempts(ctx context.Context, results []herd.AttemptResult) (err error) {
	defer wrapOp("sqldb.RecordAttempts", &err)
	if len(results) == 0 {
		return nil
	}
	tx, err := s.db.beginBgTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	now := tx.now.UnixMilli()
	var disabled []*herd.Webhook
	for _, r := range results {
		j := r.Job
		// Each update holds only while the attempt's claim does (its
		// next_at is the claim's version): a result that comes after the
		// claim ran out and another attempt took the delivery, or after a
		// redrive, changes nothing. The owner is cleared, so a restart
		// leaves a retry's wait alone.
		var res sql.Result
		switch r.Outcome {
		case herd.AttemptDelivered:
			res, err = tx.ExecContext(ctx, `UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, last_status = ?, last_reason = '', delivered_at = ?, claim_owner = '' WHERE id = ? AND status = 'pending' AND next_at = ?`,
				r.Status, now, j.DeliveryID, j.ClaimedUntil.UnixMilli())
		case herd.AttemptRetry:
			res, err = tx.ExecContext(ctx, `UPDATE webhook_deliveries SET attempts = attempts + 1, next_at = ?, last_status = ?, last_reason = ?, claim_owner = '' WHERE id = ? AND status = 'pending' AND next_at = ?`,
				r.NextAt.UnixMilli(), r.Status, r.Reason, j.DeliveryID, j.ClaimedUntil.UnixMilli())
		default: // dead, gone, disable: the delivery is dead-lettered
			res, err = tx.ExecContext(ctx, `UPDATE webhook_deliveries SET status = 'dead', attempts = attempts + 1, last_status = ?, last_reason = ?, claim_owner = '' WHERE id = ? AND status = 'pending' AND next_at = ?`,
				r.Status, r.Reason, j.DeliveryID, j.ClaimedUntil.UnixMilli())
		}
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			continue // the claim ran out: another attempt owns the delivery
		}
		if r.Outcome == herd.AttemptDelivered {
			if _, err := tx.ExecContext(ctx, `UPDATE webhooks SET failing_since = 0 WHERE id = ? AND failing_since <> 0`, j.WebhookID); err != nil {
				return err
			}
			continue
		}
		if _, err := tx.ExecContext(ctx, `UPDATE webhooks SET failing_since = ? WHERE id = ? AND failing_since = 0`, now, j.WebhookID); err != nil {
			return err
		}
		if r.Outcome == herd.AttemptGone || r.Outcome == herd.AttemptDisable {
			reason := "the receiver answered 410 Gone"
			if r.Outcome == herd.AttemptDisable {
				reason = "every delivery failed since " + j.FailingSince.Format(time.RFC3339)
			}
			w, err := scanWebhook(tx.QueryRowContext(ctx, `SELECT `+webhookColumns+` FROM webhooks w JOIN nodes n ON n.id = w.node_id AND n.tenant_id = w.tenant_id WHERE w.id = ? AND w.status = ?`, j.WebhookID, herd.WebhookActive))
			if errors.Is(err, sql.ErrNoRows) {
				continue // disabled by an earlier result
			} else if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE webhooks SET status = ?, disabled_reason = ? WHERE id = ?`, herd.WebhookDisabled, reason, w.ID); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET status = ?, last_reason = 'subscription disabled' WHERE webhook_id = ? AND status = ?`,
				herd.DeliveryDead, w.ID, herd.DeliveryPending); err != nil {
				return err
			}
			w.Status, w.DisabledReason = herd.WebhookDisabled, reason
			disabled = append(disabled, w)
		}
	}
	evs := make([]*herd.Event, 0, len(disabled))
	for _, w := range disabled {
		e := webhookEvent(herd.EventWebhookDisabled, w)
		e.TenantID = w.TenantID
		evs = append(evs, e)
	}
	if err := tx.appendEventsByTenant(ctx, evs); err != nil {
		return err
	}
	return tx.Commit()
}

// DeadLetters implements herd.WebhookQueue.
func (s *WebhookService) DeadLetters(ctx context.Context) (_ int64, err error) {
	defer wrapOp("sqldb.DeadLetters", &err)
	var n int64
	// 'dead' written out for the partial index, as in ClaimDeliveries.
	err = s.db.rdb.QueryRowContext(ctx, `SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'dead'`).Scan(&n)
	return n, err
}
