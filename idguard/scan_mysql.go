package idguard

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

func scanMySQL(ctx context.Context, db *sql.DB, progress func(int, int)) ([]Column, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// MySQL 8 caches information_schema.TABLES.AUTO_INCREMENT for a day by
	// default; the doctor needs today's. MariaDB has no such setting.
	_, _ = conn.ExecContext(ctx, `SET SESSION information_schema_stats_expiry = 0`)
	rows, err := conn.QueryContext(ctx, `SELECT c.TABLE_NAME, c.COLUMN_NAME, c.DATA_TYPE, c.COLUMN_TYPE, COALESCE(t.AUTO_INCREMENT, 1)
FROM information_schema.COLUMNS c JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME
WHERE c.TABLE_SCHEMA = DATABASE() AND c.EXTRA LIKE '%auto_increment%' ORDER BY c.TABLE_NAME`)
	if err != nil {
		return nil, fmt.Errorf("read information_schema: %w", err)
	}
	defer rows.Close()
	var out []Column
	for rows.Next() {
		var c Column
		var dataType, colType string
		var next uint64
		if err := rows.Scan(&c.Table, &c.Column, &dataType, &colType, &next); err != nil {
			return nil, err
		}
		c.Unsigned = strings.Contains(strings.ToLower(colType), "unsigned")
		c.Type = colType
		c.Max, _ = typeMax(dataType, c.Unsigned)
		if next > 0 {
			c.Used = next - 1
		}
		out = append(out, c)
		progress(len(out), 0)
	}
	return finish(out), rows.Err()
}

