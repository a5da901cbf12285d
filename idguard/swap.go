package idguard

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Execute runs a small table's plan (the ALTERs), or a large table's swap;
// a large table's rows are then copied by Copy.
func Execute(ctx context.Context, db *sql.DB, p *WidenPlan) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if !p.Swap {
		for _, s := range p.Statements {
			if _, err := conn.ExecContext(ctx, s); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		return nil
	}
	switch p.Dialect {
	case MySQL:
		return swapMySQL(ctx, conn, p)
	case Postgres:
		return swapPostgres(ctx, conn, p)
	}
	return fmt.Errorf("idguard: cannot swap on %s", p.Dialect)
}

func swapMySQL(ctx context.Context, conn *sql.Conn, p *WidenPlan) error {
	if _, err := conn.ExecContext(ctx, checkpointTable); err != nil {
		return fmt.Errorf("checkpoint table: %w", err)
	}
	var first int64
	if err := conn.QueryRowContext(ctx, fmt.Sprintf(`SELECT COALESCE(MIN(%s), 1) - 1 FROM %s`, quoteMy(p.Column), quoteMy(p.Table))).Scan(&first); err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, `INSERT INTO herd_widen_checkpoints (tbl, old_tbl, col, last_id, copied) VALUES (?, ?, ?, ?, 0)`, p.Table, p.Old, p.Column, first); err != nil {
		return fmt.Errorf("a swap of %s is already under way (herd_widen_checkpoints): %w", p.Table, err)
	}
	// MySQL commits each DDL statement on its own: a failure part-way
	// forgets the checkpoint, and the plan's statements say what was done.
	for _, s := range p.Statements {
		if _, err := conn.ExecContext(ctx, s); err != nil {
			conn.ExecContext(context.WithoutCancel(ctx), `DELETE FROM herd_widen_checkpoints WHERE tbl = ?`, p.Table)
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

func swapPostgres(ctx context.Context, conn *sql.Conn, p *WidenPlan) error {
	if _, err := conn.ExecContext(ctx, checkpointTable); err != nil {
		return fmt.Errorf("checkpoint table: %w", err)
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
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
}

// checkpointTable keeps each swap's copy: which old table goes into which,
// by what column, and how far it got. A row is made by the swap itself and
// deleted once the copy is verified: a copy is resumed only from it, never
// guessed from the names of tables.
const checkpointTable = `CREATE TABLE IF NOT EXISTS herd_widen_checkpoints (tbl VARCHAR(255) PRIMARY KEY, old_tbl VARCHAR(255) NOT NULL, col VARCHAR(255) NOT NULL, last_id BIGINT NOT NULL, copied BIGINT NOT NULL)`

// PendingCopy returns the plan of a swap of table whose copy has not been
// verified yet, or nil.
// It writes nothing: without the checkpoint table no swap was ever made.
func PendingCopy(ctx context.Context, db *sql.DB, d Dialect, table string) (*WidenPlan, error) {
	if d == SQLite {
		return nil, nil // SQLite's tables are rebuilt in place, never swapped
	}
	if ok, err := tableExists(ctx, db, d, "herd_widen_checkpoints"); err != nil || !ok {
		return nil, err
	}
	ph := "?"
	if d == Postgres {
		ph = "$1"
	}
	p := &WidenPlan{Dialect: d, Table: table, Swap: true}
	err := db.QueryRowContext(ctx, `SELECT old_tbl, col FROM herd_widen_checkpoints WHERE tbl = `+ph, table).Scan(&p.Old, &p.Column)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return p, err
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

