package sqldb

import (
	"cmp"
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

// CommandService implements herd.CommandService and herd.CommandQueue.
type CommandService struct{ db *DB }

var (
	_ herd.CommandService = (*CommandService)(nil)
	_ herd.CommandQueue   = (*CommandService)(nil)
)

// NewCommandService returns a CommandService on db.
func NewCommandService(db *DB) *CommandService { return &CommandService{db: db} }

// A command has no path of its own: it is where its device is now, so a
// move takes the device's commands along, both for who may read them and
// for the path of their later events. commandSelect reads commands with
// their device's path; commandReturning is the same columns for an UPDATE's
// RETURNING, which may not join. Both require the device in the command's
// tenant, and every command has its device (the foreign key cascades).
const (
	commandSelect = `SELECT c.id, c.tenant_id, c.device_id, c.device_key, d.path, c.name, c.args, c.ttl_s, c.status, c.result, c.error, c.created_at, c.expires_at, c.delivered_at, c.completed_at
FROM commands c JOIN devices d ON d.id = c.device_id AND d.tenant_id = c.tenant_id`
	commandReturning = `id, tenant_id, device_id, device_key, COALESCE((SELECT d.path FROM devices d WHERE d.id = commands.device_id AND d.tenant_id = commands.tenant_id), ''), name, args, ttl_s, status, result, error, created_at, expires_at, delivered_at, completed_at`
)

func scanCommand(sc rowScanner) (*herd.Command, error) {
	var c herd.Command
	var args string
	var result sql.NullString
	var created, expires int64
	var delivered, completed sql.NullInt64
	if err := sc.Scan(&c.ID, &c.TenantID, &c.DeviceID, &c.DeviceKey, &c.Path, &c.Name, &args, &c.TTLSeconds, &c.Status, &result, &c.Error, &created, &expires, &delivered, &completed); err != nil {
		return nil, err
	}
	c.Args, c.CreatedAt, c.ExpiresAt = json.RawMessage(args), msToTime(created), msToTime(expires)
	if result.Valid {
		c.Result = json.RawMessage(result.String)
	}
	if delivered.Valid {
		t := msToTime(delivered.Int64)
		c.DeliveredAt = &t
	}
	if completed.Valid {
		t := msToTime(completed.Int64)
		c.CompletedAt = &t
	}
	return &c, nil
}

// commandEvent carries the whole command: a gateway delivers it from the
// event alone.
func commandEvent(typ string, c *herd.Command) *herd.Event {
	ev := newEvent(typ, herd.EventSubjectCommand, c.ID, c.Path, c)
	ev.TenantID = c.TenantID
	return ev
}

// CreateCommand implements herd.CommandService: the command and its event
// commit together. With an idempotency key, a command the token already
// sent under that key is returned as it is, and nothing is written.
func (s *CommandService) CreateCommand(ctx context.Context, c *herd.Command) (err error) {
	defer wrapOp("sqldb.CreateCommand", &err)
	a, err := actor(ctx)
	if err != nil {
		return err
	} else if err := c.Validate(); err != nil {
		return err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	d, err := tx.findDevice(ctx, a, c.DeviceID, herd.RoleOperator)
	if err != nil {
		return err
	}
	var key any
	if c.IdempotencyKey != "" {
		key = c.IdempotencyKey
		cond, args := tenantCond(a, "c.tenant_id")
		prev, err := scanCommand(tx.QueryRowContext(ctx, commandSelect+` WHERE c.token_id = ? AND c.idempotency_key = ?`+cond, append([]any{commandToken(a), key}, args...)...))
		if err == nil {
			if prev.DeviceID != c.DeviceID || prev.Name != c.Name || prev.TTLSeconds != c.TTLSeconds || !sameJSON(prev.Args, c.Args) {
				return herd.Errorf(herd.EKEYREUSED, "this Idempotency-Key made command %d, another command: use a new key per command", prev.ID)
			}
			*c = *prev
			return nil
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
	}
	c.TenantID, c.DeviceKey, c.Path, c.Status = d.TenantID, d.Key, d.Path, herd.CommandPending
	c.CreatedAt = tx.now
	c.ExpiresAt = tx.now.Add(time.Duration(c.TTLSeconds) * time.Second)
	c.Result, c.Error, c.DeliveredAt, c.CompletedAt = nil, "", nil, nil
	c.ID, err = tx.insertID(ctx, `INSERT INTO commands (tenant_id, device_id, device_key, name, args, ttl_s, status, token_id, idempotency_key, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.TenantID, c.DeviceID, c.DeviceKey, c.Name, string(c.Args), c.TTLSeconds, c.Status, commandToken(a), key, tx.now.UnixMilli(), c.ExpiresAt.UnixMilli())
	if err != nil {
		return formatError(err, "a command with this idempotency key is being created")
	}
	if err := tx.appendEvents(ctx, c.TenantID, commandEvent(herd.EventCommandCreated, c)); err != nil {
		return err
	}
	return tx.Commit()
}

// commandToken is the token a command records as its sender, the owner of
// its idempotency key. Super-admin tokens are counted apart from users'
// tokens (admin_tokens and tokens), so the ids can be the same: a
// super-admin's is recorded negated, and a user's key never meets it.
func commandToken(a *herd.Actor) int64 {
	if a.Super {
		return -a.TokenID
	}
	return a.TokenID
}

// FindCommandByID implements herd.CommandService.
func (s *CommandService) FindCommandByID(ctx context.Context, id int64) (_ *herd.Command, err error) {
	defer wrapOp("sqldb.FindCommandByID", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.Command, error) {
		cond, args := tenantCond(a, "c.tenant_id")
		c, err := scanCommand(tx.QueryRowContext(ctx, commandSelect+` WHERE c.id = ?`+cond, append([]any{id}, args...)...))
		if errors.Is(err, sql.ErrNoRows) || (err == nil && !a.Allows(c.TenantID, c.Path, herd.RoleViewer)) {
			return nil, herd.Errorf(herd.ENOTFOUND, "command %d not found", id)
		}
		return c, err
	})
}

// FindCommandsByDevice implements herd.CommandService: newest first.
func (s *CommandService) FindCommandsByDevice(ctx context.Context, deviceID int64, limit int) (_ []*herd.Command, err error) {
	defer wrapOp("sqldb.FindCommandsByDevice", &err)
	if limit < 1 || limit > 1000 {
		return nil, herd.Errorf(herd.EINVALIDLIMIT, "limit must be from 1 to 1,000")
	}
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) ([]*herd.Command, error) {
		d, err := tx.findDevice(ctx, a, deviceID, herd.RoleViewer)
		if err != nil {
			return nil, err
		}
		rows, err := tx.QueryContext(ctx, commandSelect+` WHERE c.device_id = ? AND c.tenant_id = ? ORDER BY c.id DESC LIMIT ?`, deviceID, d.TenantID, limit)
		if err != nil {
			return nil, err
		}
		return scanCommands(rows)
	})
}

func scanCommands(rows *sql.Rows) ([]*herd.Command, error) {
	defer rows.Close()
	out := []*herd.Command{}
	for rows.Next() {
		c, err := scanCommand(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// OpenCommands implements herd.CommandQueue.
func (s *CommandService) OpenCommands(ctx context.Context, tenantID, deviceID int64) (_ []*herd.Command, err error) {
	defer wrapOp("sqldb.OpenCommands", &err)
	rows, err := s.db.readPool().QueryContext(ctx, s.db.rebind(commandSelect+` WHERE c.device_id = ? AND c.tenant_id = ? AND c.status IN ('pending', 'delivered') AND c.expires_at > ? ORDER BY c.id`),
		deviceID, tenantID, s.db.Now().UnixMilli())
	if err != nil {
		return nil, err
	}
	return scanCommands(rows)
}

// PendingCommands implements herd.CommandQueue.
func (s *CommandService) PendingCommands(ctx context.Context, before time.Time, limit int) (_ []*herd.Command, err error) {
	defer wrapOp("sqldb.PendingCommands", &err)
	// Only connected devices' commands: the rest are sent when their device
	// returns, and would otherwise fill the page as a backlog grows.
	rows, err := s.db.readPool().QueryContext(ctx, s.db.rebind(commandSelect+` WHERE c.status = 'pending' AND c.expires_at > ? AND c.created_at < ? AND d.online ORDER BY c.expires_at LIMIT ?`),
		s.db.Now().UnixMilli(), before.UnixMilli(), limit)
	if err != nil {
		return nil, err
	}
	return scanCommands(rows)
}

// MarkDelivered implements herd.CommandQueue: pending commands become
// delivered, with an event each; others are left as they are.
func (s *CommandService) MarkDelivered(ctx context.Context, ids []int64) (err error) {
	defer wrapOp("sqldb.MarkDelivered", &err)
	for start := 0; start < len(ids); start += transitionChunk {
		chunk := ids[start:min(start+transitionChunk, len(ids))]
		if _, err := s.transition(ctx, `status = 'pending' AND id IN (`+strings.TrimSuffix(strings.Repeat("?,", len(chunk)), ",")+`)`, toAny(chunk),
			`status = 'delivered', delivered_at = ?`, herd.EventCommandDelivered); err != nil {
			return err
		}
	}
	return nil
}

// ExpireCommands implements herd.CommandQueue.
// Every process runs it every second, so the usual answer, nothing due,
// comes from a read: the write transaction (on SQLite the one writer) is
// taken only when there is something to expire.
func (s *CommandService) ExpireCommands(ctx context.Context) (_ int, err error) {
	defer wrapOp("sqldb.ExpireCommands", &err)
	const due = `status IN ('pending', 'delivered') AND expires_at <= ?`
	now := s.db.Now().UnixMilli()
	var one int
	err = s.db.readPool().QueryRowContext(ctx, s.db.rebind(`SELECT 1 FROM commands WHERE `+due+` LIMIT 1`), now).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	return s.transition(ctx, due, []any{now}, `status = 'expired', completed_at = ?`, herd.EventCommandExpired)
}

// transitionChunk bounds the commands one transition statement names.
const transitionChunk = 400

func toAny(ids []int64) []any {
	out := make([]any, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

// transition moves the commands matching where to a new status (set takes
// the time as its one parameter), with an event for each command it did
// move, in transactions of at most transitionChunk commands. The update
// states where again: a command that another process (or the device's
// answer) moved on meanwhile is neither updated nor given an event.
func (s *CommandService) transition(ctx context.Context, where string, args []any, set, eventType string) (int, error) {
	total := 0
	for {
		moved, more, err := s.transitionChunk(ctx, where, args, set, eventType)
		total += moved
		if err != nil || !more {
			return total, err
		}
	}
}

func (s *CommandService) transitionChunk(ctx context.Context, where string, args []any, set, eventType string) (int, bool, error) {
	tx, err := s.db.beginBgTx(ctx)
	if err != nil {
		return 0, false, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT id, tenant_id FROM commands WHERE `+where+` ORDER BY id LIMIT ?`, append(slices.Clone(args), transitionChunk)...)
	if err != nil {
		return 0, false, err
	}
	var ids []any
	var tenants []int64
	for rows.Next() {
		var id, tenant int64
		if err := rows.Scan(&id, &tenant); err != nil {
			rows.Close()
			return 0, false, err
		}
		ids, tenants = append(ids, id), append(tenants, tenant)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(ids) == 0 {
		return 0, false, err
	}
	// The tenants' rows first, in id order, as every writer of events
	// does (the ingest batch that records answers locks them before the
	// commands): taken the other way round, the two could deadlock.
	slices.Sort(tenants)
	for _, t := range slices.Compact(tenants) {
		if _, err := tx.lockTenantTree(ctx, t); err != nil {
			return 0, false, err
		}
	}
	in := strings.TrimSuffix(strings.Repeat("?,", len(ids)), ",")
	upd, err := tx.QueryContext(ctx, `UPDATE commands SET `+set+` WHERE id IN (`+in+`) AND `+where+` RETURNING `+commandReturning,
		append(append([]any{tx.now.UnixMilli()}, ids...), args...)...)
	if err != nil {
		return 0, false, fmt.Errorf("update commands: %w", err)
	}
	moved, err := scanCommands(upd)
	if err != nil {
		return 0, false, err
	}
	// RETURNING promises no order; each tenant's events go in id order.
	slices.SortFunc(moved, func(a, b *herd.Command) int { return cmp.Compare(a.ID, b.ID) })
	evs := make([]*herd.Event, len(moved))
	for i, c := range moved {
		evs[i] = commandEvent(eventType, c)
	}
	if err := tx.appendEventsByTenant(ctx, evs); err != nil {
		return 0, false, err
	}
	if err := tx.Commit(); err != nil {
		return 0, false, err
	}
	return len(moved), len(ids) == transitionChunk, nil
}

// applyCommandAcks records devices' answers in the ingest batch: an open
// command of the answering device becomes acked or failed, with an event;
// an answer to a command that is not open (answered before, expired, or
// not this device's) changes nothing.
func (tx *Tx) applyCommandAcks(ctx context.Context, items []*herd.IngestItem) ([]*herd.Event, error) {
	var evs []*herd.Event
	for _, it := range items {
		status, typ := herd.CommandAcked, herd.EventCommandAcked
		if !it.Ack.OK {
			status, typ = herd.CommandFailed, herd.EventCommandFailed
		}
		var result any
		if it.Ack.Result != nil {
			result = string(it.Ack.Result)
		}
		// An answer proves delivery, also when it outran the PUBACK's mark.
		c, err := scanCommand(tx.QueryRowContext(ctx, `UPDATE commands SET status = ?, result = ?, error = ?, completed_at = ?, delivered_at = COALESCE(delivered_at, ?) WHERE id = ? AND device_id = ? AND tenant_id = ? AND status IN ('pending', 'delivered') RETURNING `+commandReturning,
			status, result, it.Ack.Error, it.At, it.At, it.Ack.CommandID, it.DeviceID, it.TenantID))
		if errors.Is(err, sql.ErrNoRows) {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("command ack: %w", err)
		}
		evs = append(evs, commandEvent(typ, c))
	}
	return evs, nil
}

// sameJSON reports whether two JSON texts hold the same value.
func sameJSON(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return string(a) == string(b)
	}
	ax, _ := json.Marshal(x)
	by, _ := json.Marshal(y)
	return string(ax) == string(by)
}
