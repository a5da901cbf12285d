package idguard

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

func scanSQLite(ctx context.Context, db *sql.DB, progress func(int, int)) ([]Column, error) {
	rows, err := db.QueryContext(ctx, `SELECT name, COALESCE(sql, '') FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("read sqlite_master: %w", err)
	}
	type table struct{ name, sql string }
	var tables []table
	for rows.Next() {
		var t table
		if err := rows.Scan(&t.name, &t.sql); err != nil {
			rows.Close()
			return nil, err
		}
		if !strings.Contains(strings.ToUpper(t.sql), "WITHOUT ROWID") {
			tables = append(tables, t)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	seqs := map[string]uint64{}
	if srows, err := db.QueryContext(ctx, `SELECT name, seq FROM sqlite_sequence`); err == nil {
		for srows.Next() {
			var n string
			var s int64
			if srows.Scan(&n, &s) == nil {
				seqs[n] = uint64(max(s, 0))
			}
		}
		srows.Close()
	}
	var out []Column
	for i, t := range tables {
		c := Column{Table: t.name, Column: "rowid", Type: "rowid", Max: 1<<63 - 1}
		// A primary key of one INTEGER column, when there is one, is the
		// rowid. A composite key is not: the rowid is a column of its own
		// then, and naming the key's first column would point at the wrong
		// one.
		cols, err := db.QueryContext(ctx, `SELECT name, type, pk FROM pragma_table_info(?)`, t.name)
		if err != nil {
			return nil, err
		}
		var pkCols int
		var pkName, pkType string
		for cols.Next() {
			var name, typ string
			var pk int
			if err := cols.Scan(&name, &typ, &pk); err != nil {
				cols.Close()
				return nil, err
			}
			if pk > 0 {
				pkCols++
				pkName, pkType = name, typ
			}
		}
		cols.Close()
		if pkCols == 1 && strings.EqualFold(pkType, "INTEGER") {
			c.Column, c.Type = pkName, "INTEGER PRIMARY KEY"
		}
		if s, ok := seqs[t.name]; ok {
			c.Used, c.Type = s, c.Type+" AUTOINCREMENT"
		} else {
			var m sql.NullInt64
			if err := db.QueryRowContext(ctx, `SELECT MAX(rowid) FROM "`+strings.ReplaceAll(t.name, `"`, `""`)+`"`).Scan(&m); err != nil {
				return nil, err
			}
			c.Used = uint64(max(m.Int64, 0))
		}
		out = append(out, c)
		progress(i+1, len(tables))
	}
	return finish(out), nil
}
