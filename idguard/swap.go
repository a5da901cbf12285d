package idguard

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
)

// Execute runs a small table's plan (the ALTERs), or a large table's swap;
// a large table's rows are then copied by Copy. Every lock on the table is
// waited for p.LockTimeout at most, p.LockTries times.
func Execute(ctx context.Context, db *sql.DB, p *WidenPlan) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	switch {
	case p.Dialect == MySQL && p.Swap:
		return swapMySQL(ctx, conn, p)
	case p.Dialect == Postgres && p.Swap:
		return swapPostgres(ctx, conn, p)
	case p.Dialect == MySQL:
		return alterMySQL(ctx, conn, p)
	case p.Dialect == Postgres:
		return inTransaction(ctx, conn, p, p.Statements)
	}
	return fmt.Errorf("idguard: cannot widen on %s", p.Dialect)
}

// mysqlLockWait is MySQL's lock wait timeout (1205), a metadata lock's
// among them.
func mysqlLockWait(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1205
}

// postgresLockWait is PostgreSQL's lock_not_available (lock_timeout).
func postgresLockWait(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "55P03"
}

// shortLockWait sets the session's metadata lock timeout to the plan's
// (the server's is a day) until the returned func puts it back.
func shortLockWait(ctx context.Context, conn *sql.Conn, p *WidenPlan) (func(), error) {
	secs := max(1, int(math.Ceil(p.lockTimeout().Seconds())))
	if _, err := conn.ExecContext(ctx, fmt.Sprintf(`SET SESSION lock_wait_timeout = %d`, secs)); err != nil {
		return nil, fmt.Errorf("set lock_wait_timeout: %w", err)
	}
	return func() { conn.ExecContext(context.WithoutCancel(ctx), `SET SESSION lock_wait_timeout = DEFAULT`) }, nil
}

// alterMySQL runs a small table's ALTERs one by one (MySQL commits each
// on its own), each waiting a moment at most for its lock, and tried
// again: an ALTER waiting behind a long transaction holds up every writer
// of the table.
func alterMySQL(ctx context.Context, conn *sql.Conn, p *WidenPlan) error {
	restore, err := shortLockWait(ctx, conn, p)
	if err != nil {
		return err
	}
	defer restore()
	for i, s := range p.Statements {
		err := lockTries(ctx, p, "ALTER TABLE", mysqlLockWait, func() error {
			_, err := conn.ExecContext(ctx, s)
			return err
		})
		if err != nil {
			if i > 0 {
				return fmt.Errorf("%s: %w (the %d statements before it were done: run them on from here)", s, err, i)
			}
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// inTransaction runs statements in one PostgreSQL transaction whose locks
// are waited for a moment at most, and tried again: a lock waiting behind
// a long transaction holds up every writer of the table. A failure leaves
// nothing behind.
func inTransaction(ctx context.Context, conn *sql.Conn, p *WidenPlan, statements []string) error {
	return lockTries(ctx, p, "ALTER TABLE", postgresLockWait, func() error {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d`, max(1, p.lockTimeout().Milliseconds()))); err != nil {
			return fmt.Errorf("set lock_timeout: %w", err)
		}
		for _, s := range statements {
			if _, err := tx.ExecContext(ctx, s); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		return tx.Commit()
	})
}

// Defaults for a swap's lock: each try waits this long at most, and the
// swap gives up after this many tries (gh-ost's cut-over does the same).
const (
	DefaultLockTimeout = 2 * time.Second
	DefaultLockTries   = 10
)

// lockTries runs try up to p.LockTries times while it fails on its lock
// timeout (busy says which errors those are), pausing longer after each:
// writers queued behind the waiting lock go on between tries.
func lockTries(ctx context.Context, p *WidenPlan, what string, busy func(error) bool, try func() error) error {
	tries := p.LockTries
	if tries <= 0 {
		tries = DefaultLockTries
	}
	pause := 250 * time.Millisecond
	var err error
	for i := 1; i <= tries; i++ {
		if err = try(); err == nil || !busy(err) {
			return err
		}
		if i == tries {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 8*time.Second)
	}
	return fmt.Errorf("%s waited %s for its lock on %s %d times: a long transaction holds the table open (see its session in SHOW PROCESSLIST or pg_stat_activity); gave up, nothing was changed; run again once it has ended, or allow more (--lock-timeout, --lock-tries): %w",
		what, p.lockTimeout(), p.Table, tries, err)
}

// lockTimeout is the plan's lock timeout, or the default.
func (p *WidenPlan) lockTimeout() time.Duration {
	if p.LockTimeout <= 0 {
		return DefaultLockTimeout
	}
	return p.LockTimeout
}

func swapMySQL(ctx context.Context, conn *sql.Conn, p *WidenPlan) (err error) {
	if _, err := conn.ExecContext(ctx, checkpointTable); err != nil {
		return fmt.Errorf("checkpoint table: %w", err)
	}
	var first int64
	if err := conn.QueryRowContext(ctx, fmt.Sprintf(`SELECT COALESCE(MIN(%s), 1) - 1 FROM %s`, quoteMy(p.Column), quoteMy(p.Table))).Scan(&first); err != nil {
		return err
	}
	// The checkpoint comes first: a checkpoint without the old table is a
	// swap stopped before its rename, which UndoInterruptedSwap takes back.
	if _, err := conn.ExecContext(ctx, `INSERT INTO herd_widen_checkpoints (tbl, old_tbl, col, last_id, copied) VALUES (?, ?, ?, ?, 0)`, p.Table, p.Old, p.Column, first); err != nil {
		return fmt.Errorf("a swap of %s is already under way (herd_widen_checkpoints): %w", p.Table, err)
	}
	// MySQL commits each DDL statement on its own: a failure before the
	// rename takes back what was done (the new table and the checkpoint),
	// so that the same command can simply be run again.
	created := false
	defer func() {
		if err == nil {
			return
		}
		undo := context.WithoutCancel(ctx)
		if created {
			conn.ExecContext(undo, `DROP TABLE IF EXISTS `+quoteMy(p.Table+"_new"))
		}
		conn.ExecContext(undo, `DELETE FROM herd_widen_checkpoints WHERE tbl = ?`, p.Table)
	}()
	// The rename waits for every transaction that has the table open, and
	// every writer waits behind it: the server's lock_wait_timeout is a
	// day. Each try waits a moment at most.
	restore, err := shortLockWait(ctx, conn, p)
	if err != nil {
		return err
	}
	defer restore()
	for _, s := range p.Statements {
		if strings.HasPrefix(s, "RENAME TABLE") {
			err := lockTries(ctx, p, "RENAME TABLE", mysqlLockWait, func() error {
				_, err := conn.ExecContext(ctx, s)
				return err
			})
			if err != nil {
				return err
			}
			continue
		}
		if _, err := conn.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
		if strings.HasPrefix(s, "CREATE TABLE") {
			created = true
		}
	}
	return nil
}

func swapPostgres(ctx context.Context, conn *sql.Conn, p *WidenPlan) error {
	if _, err := conn.ExecContext(ctx, checkpointTable); err != nil {
		return fmt.Errorf("checkpoint table: %w", err)
	}
	// One transaction: a failure or a kill anywhere leaves nothing behind.
	// LOCK TABLE waits for every transaction that has the table open, and
	// every writer waits behind it: each try waits a moment at most.
	return lockTries(ctx, p, "LOCK TABLE", postgresLockWait, func() error {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d`, max(1, p.lockTimeout().Milliseconds()))); err != nil {
			return fmt.Errorf("set lock_timeout: %w", err)
		}
		var first int64
		if err := tx.QueryRowContext(ctx, fmt.Sprintf(`SELECT COALESCE(MIN(%s), 1) - 1 FROM %s`, quotePg(p.Column), quotePg(p.Table))).Scan(&first); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO herd_widen_checkpoints (tbl, old_tbl, col, last_id, copied) VALUES ($1, $2, $3, $4, 0)`, p.Table, p.Old, p.Column, first); err != nil {
			return fmt.Errorf("a swap of %s is already under way (herd_widen_checkpoints): %w", p.Table, err)
		}
		for _, s := range p.Statements {
			if s == "BEGIN" || s == "COMMIT" {
				continue
			}
			if _, err := tx.ExecContext(ctx, s); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		return tx.Commit()
	})
}

// checkpointTable keeps each swap's copy: which old table goes into which,
// by what column, and how far it got. A row is made by the swap itself and
// deleted once the copy is verified: a copy is resumed only from it, never
// guessed from the names of tables.
const checkpointTable = `CREATE TABLE IF NOT EXISTS herd_widen_checkpoints (tbl VARCHAR(255) PRIMARY KEY, old_tbl VARCHAR(255) NOT NULL, col VARCHAR(255) NOT NULL, last_id BIGINT NOT NULL, copied BIGINT NOT NULL)`

// PendingCopy returns the plan of a swap of table whose copy has not been
// verified yet, or nil. A checkpoint whose old table is not there is a swap
// stopped before its rename: that is an error, and UndoInterruptedSwap
// takes it back.
// It writes nothing: without the checkpoint table no swap was ever made.
func PendingCopy(ctx context.Context, db *sql.DB, d Dialect, table string) (*WidenPlan, error) {
	p, err := checkpoint(ctx, db, d, table)
	if err != nil || p == nil {
		return nil, err
	}
	swapped, err := tableExists(ctx, db, d, p.Old)
	if err != nil {
		return nil, err
	}
	if !swapped {
		return nil, fmt.Errorf("a swap of %s was stopped before its rename (a checkpoint, no %s): UndoInterruptedSwap (herd doctor ids widen --execute) takes it back", table, p.Old)
	}
	return p, nil
}

// checkpoint reads table's row of herd_widen_checkpoints as a plan, or nil.
func checkpoint(ctx context.Context, db *sql.DB, d Dialect, table string) (*WidenPlan, error) {
	if d == SQLite {
		return nil, nil // SQLite's tables are rebuilt in place, never swapped
	}
	if ok, err := tableExists(ctx, db, d, "herd_widen_checkpoints"); err != nil || !ok {
		return nil, err
	}
	p := &WidenPlan{Dialect: d, Table: table, Swap: true}
	err := db.QueryRowContext(ctx, `SELECT old_tbl, col FROM herd_widen_checkpoints WHERE tbl = `+placeholder(d, 1), table).Scan(&p.Old, &p.Column)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return p, err
}

// InterruptedSwap reports whether a swap of table was stopped after its
// checkpoint and before its rename (a checkpoint, and no old table). It
// writes nothing.
func InterruptedSwap(ctx context.Context, db *sql.DB, d Dialect, table string) (bool, error) {
	p, err := checkpoint(ctx, db, d, table)
	if err != nil || p == nil {
		return false, err
	}
	swapped, err := tableExists(ctx, db, d, p.Old)
	return !swapped && err == nil, err
}

// UndoInterruptedSwap takes back a swap of table that was stopped (killed,
// or its connection lost) after its checkpoint and before its rename: it
// drops the new table, still empty, and the checkpoint, so the widening can
// be planned and run again. It reports whether there was one to undo. A
// swap that got as far as its rename is not undone: its copy is resumed.
func UndoInterruptedSwap(ctx context.Context, db *sql.DB, d Dialect, table string) (bool, error) {
	if stopped, err := InterruptedSwap(ctx, db, d, table); err != nil || !stopped {
		return false, err
	}
	q := quoteMy
	if d == Postgres {
		q = quotePg
	}
	newT := table + "_new"
	if left, err := tableExists(ctx, db, d, newT); err != nil {
		return false, err
	} else if left {
		// Nothing writes to the new table before the rename: rows in it
		// mean it is not the swap's, and it is not dropped.
		var any int
		err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 AS one FROM `+q(newT)+` LIMIT 1) k`).Scan(&any)
		if err != nil {
			return false, fmt.Errorf("undo the stopped swap of %s: %w", table, err)
		}
		if any > 0 {
			return false, fmt.Errorf("a swap of %s was stopped before its rename, but %s holds rows: it is not the swap's empty table; rename or drop it, and delete %s's row of herd_widen_checkpoints", table, newT, table)
		}
		if _, err := db.ExecContext(ctx, `DROP TABLE `+q(newT)); err != nil {
			return false, fmt.Errorf("undo the stopped swap of %s: %w", table, err)
		}
	}
	if _, err := db.ExecContext(ctx, `DELETE FROM herd_widen_checkpoints WHERE tbl = `+placeholder(d, 1), table); err != nil {
		return false, fmt.Errorf("undo the stopped swap of %s: %w", table, err)
	}
	return true, nil
}

// placeholder is the dialect's nth query parameter.
func placeholder(d Dialect, n int) string {
	if d == Postgres {
		return fmt.Sprintf("$%d", n)
	}
	return "?"
}

// Done forgets a verified copy's checkpoint.
func Done(ctx context.Context, db *sql.DB, p *WidenPlan) error {
	ph := "?"
	if p.Dialect == Postgres {
		ph = "$1"
	}
	_, err := db.ExecContext(ctx, `DELETE FROM herd_widen_checkpoints WHERE tbl = `+ph, p.Table)
	return err
}
