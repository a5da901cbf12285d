package idguard

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// CopyProgress is told how many rows are copied, of about how many.
type CopyProgress func(copied, total int64)

// Copy moves a swapped table's old rows back into it, in primary-key chunks
// of chunk rows, at most rowsPerSecond a second (0: unthrottled). It keeps
// its place in herd_widen_checkpoints, so a killed copy goes on where it
// stopped; rows already there are skipped (INSERT IGNORE, ON CONFLICT DO
// NOTHING).
func Copy(ctx context.Context, db *sql.DB, p *WidenPlan, chunk int, rowsPerSecond float64, progress CopyProgress) error {
	if chunk <= 0 {
		chunk = 1000
	}
	if progress == nil {
		progress = func(int64, int64) {}
	}
	ph := func(n int) string {
		if p.Dialect == Postgres {
			return fmt.Sprintf("$%d", n)
		}
		return "?"
	}
	q := quoteMy
	if p.Dialect == Postgres {
		q = quotePg
	}
	var last, copied int64
	err := db.QueryRowContext(ctx, `SELECT last_id, copied FROM herd_widen_checkpoints WHERE tbl = `+ph(1), p.Table).Scan(&last, &copied)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("no swap of %s to copy back (its checkpoint is made by the swap)", p.Table)
	} else if err != nil {
		return err
	}
	var total int64
	db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+q(p.Old)).Scan(&total)
	cols, err := columnList(ctx, db, p, q)
	if err != nil {
		return err
	}
	start, startCopied := time.Now(), copied
	for {
		var hi sql.NullInt64
		// The chunk's upper key, then the chunk, then the checkpoint, in
		// one transaction: a kill leaves the checkpoint at a chunk's end.
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, fmt.Sprintf(`SELECT MAX(%s) FROM (SELECT %s FROM %s WHERE %s > %s ORDER BY %s LIMIT %d) k`,
			q(p.Column), q(p.Column), q(p.Old), q(p.Column), ph(1), q(p.Column), chunk), last).Scan(&hi); err != nil {
			tx.Rollback()
			return err
		}
		if !hi.Valid {
			tx.Rollback()
			progress(copied, total)
			return nil
		}
		// Rows already there by id (a chunk copied before a kill whose
		// checkpoint did not commit cannot happen, but a row written into
		// the new table by hand can) are left out; any other conflict (a
		// secondary unique key taken by a new row) stops the copy with its
		// error, rather than dropping an old row without a word.
		query := fmt.Sprintf(`INSERT INTO %s (%s) SELECT %s FROM %s o WHERE o.%s > %s AND o.%s <= %s AND NOT EXISTS (SELECT 1 FROM %s n WHERE n.%s = o.%s)`,
			q(p.Table), cols, prefixed(cols, "o."), q(p.Old), q(p.Column), ph(1), q(p.Column), ph(2), q(p.Table), q(p.Column), q(p.Column))
		if p.Dialect == Postgres {
			// The conflict target is the id alone: any other unique key
			// still raises its error. (An anti-join here is planned as a
			// scan of the whole new table per chunk.)
			query = fmt.Sprintf(`INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %s WHERE %s > %s AND %s <= %s ON CONFLICT (%s) DO NOTHING`,
				q(p.Table), cols, cols, q(p.Old), q(p.Column), ph(1), q(p.Column), ph(2), q(p.Column))
		}
		res, err := tx.ExecContext(ctx, query, last, hi.Int64)
		if err != nil {
			tx.Rollback()
			return fmt.Errorf("copy chunk after %d: %w", last, err)
		}
		n, _ := res.RowsAffected()
		if _, err := tx.ExecContext(ctx, `UPDATE herd_widen_checkpoints SET last_id = `+ph(1)+`, copied = copied + `+ph(2)+` WHERE tbl = `+ph(3), hi.Int64, n, p.Table); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		last, copied = hi.Int64, copied+n
		progress(copied, total)
		if rowsPerSecond > 0 {
			// Throttle: as long as the rows copied so far should take.
			due := start.Add(time.Duration(float64(copied-startCopied) / rowsPerSecond * float64(time.Second)))
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Until(due)):
			}
		}
	}
}

// prefixed puts a table alias before each of a list of quoted columns.
func prefixed(cols, alias string) string {
	parts := strings.Split(cols, ", ")
	for i := range parts {
		parts[i] = alias + parts[i]
	}
	return strings.Join(parts, ", ")
}

// columnList names the old table's columns, for INSERT … SELECT.
func columnList(ctx context.Context, db *sql.DB, p *WidenPlan, q func(string) string) (string, error) {
	var rows *sql.Rows
	var err error
	if p.Dialect == Postgres {
		rows, err = db.QueryContext(ctx, `SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position`, p.Old)
	} else {
		rows, err = db.QueryContext(ctx, `SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`, p.Old)
	}
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return "", err
		}
		cols = append(cols, q(c))
	}
	if len(cols) == 0 {
		return "", fmt.Errorf("%s: the old table is not there (was the swap made?)", p.Old)
	}
	return strings.Join(cols, ", "), rows.Err()
}

// Verify counts the old table's rows and those of them found in the new
// one by primary key: equal counts mean the copy is complete.
func Verify(ctx context.Context, db *sql.DB, p *WidenPlan) (old, found int64, err error) {
	q := quoteMy
	if p.Dialect == Postgres {
		q = quotePg
	}
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+q(p.Old)).Scan(&old); err != nil {
		return 0, 0, err
	}
	err = db.QueryRowContext(ctx, fmt.Sprintf(`SELECT COUNT(*) FROM %s o JOIN %s n ON n.%s = o.%s`, q(p.Old), q(p.Table), q(p.Column), q(p.Column))).Scan(&found)
	return old, found, err
}
