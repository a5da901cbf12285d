package sqldb

import (
	"context"
	"crypto/rand"
	"fmt"

	"github.com/herd-iot/herd"
)

// cursorKeyName is the store_keys row of the key that signs cursors.
const cursorKeyName = "cursor"

// loadCursorKey reads the store's cursor key, making it on the first open.
// Every process on the store reads the same row, so each takes the
// cursors the others issue. Processes opening a new store at once race to
// insert: the first insert wins, the others do nothing, and all then read
// the winner's key.
func (db *DB) loadCursorKey(ctx context.Context) error {
	key := make([]byte, herd.CursorKeySize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	if _, err := db.wdb.ExecContext(ctx, db.rebind(`INSERT INTO store_keys (name, secret, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING`),
		cursorKeyName, key, db.Now().UnixMilli()); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	var stored []byte
	if err := db.wdb.QueryRowContext(ctx, db.rebind(`SELECT secret FROM store_keys WHERE name = ?`), cursorKeyName).Scan(&stored); err != nil {
		return fmt.Errorf("read: %w", err)
	} else if len(stored) < herd.CursorKeySize {
		return fmt.Errorf("the stored key has %d bytes, want %d", len(stored), herd.CursorKeySize)
	}
	db.cursorKey = herd.CursorKey(stored)
	return nil
}

// openCursor checks and decodes the cursor a client sent with q into
// q.After. The cursor must have been issued within the same scope (see
// herd.CursorKey.For): the caller's tenant and grants are part of what it
// is signed for. A query built in process with After set and no Cursor is
// taken as it is.
func (db *DB) openCursor(q *herd.DeviceQuery, scope herd.Scope) error {
	if q.Cursor == "" {
		return nil
	}
	after, err := q.DecodeCursor(db.cursorKey.For(scope), q.Cursor)
	if err != nil {
		return err
	}
	q.After = after
	return nil
}
