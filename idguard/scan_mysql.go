package idguard

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"strings"
)

// autoIncrementColumns lists the database's auto-increment columns with
// their tables' counters, their engines, and whether an index begins with
// the column: on MyISAM and Aria, one that is only a later part of its
// keys (PRIMARY KEY (grp, id)) counts per group, and the table's counter
// says nothing of it.
const autoIncrementColumns = `SELECT c.TABLE_NAME, c.COLUMN_NAME, c.DATA_TYPE, c.COLUMN_TYPE, COALESCE(t.AUTO_INCREMENT, 1), COALESCE(t.ENGINE, ''),
  EXISTS (SELECT 1 FROM information_schema.STATISTICS s WHERE s.TABLE_SCHEMA = c.TABLE_SCHEMA AND s.TABLE_NAME = c.TABLE_NAME AND s.COLUMN_NAME = c.COLUMN_NAME AND s.SEQ_IN_INDEX = 1)
FROM information_schema.COLUMNS c JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME
WHERE c.TABLE_SCHEMA = DATABASE() AND c.EXTRA LIKE '%auto_increment%' ORDER BY c.TABLE_NAME`

func scanMySQL(ctx context.Context, db *sql.DB, progress func(int, int)) ([]Column, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := checkMySQLVisibility(ctx, conn); err != nil {
		return nil, err
	}
	// MySQL 8 caches information_schema.TABLES.AUTO_INCREMENT for a day by
	// default; the doctor needs today's. MariaDB has no such setting.
	_, _ = conn.ExecContext(ctx, `SET SESSION information_schema_stats_expiry = 0`)
	rows, err := conn.QueryContext(ctx, autoIncrementColumns)
	if err != nil {
		return nil, fmt.Errorf("read information_schema: %w", err)
	}
	type found struct {
		c        Column
		next     uint64
		perGroup bool
	}
	var all []found
	for rows.Next() {
		var f found
		var dataType, colType, engine string
		var leads bool
		if err := rows.Scan(&f.c.Table, &f.c.Column, &dataType, &colType, &f.next, &engine, &leads); err != nil {
			rows.Close()
			return nil, err
		}
		f.c.Unsigned = strings.Contains(strings.ToLower(colType), "unsigned")
		f.c.Type = colType
		f.c.Max, _ = typeMax(dataType, f.c.Unsigned)
		f.perGroup = !leads && (strings.EqualFold(engine, "MyISAM") || strings.EqualFold(engine, "Aria"))
		all = append(all, f)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read information_schema: %w", err)
	}
	out := make([]Column, 0, len(all))
	for _, f := range all {
		c := f.c
		if f.next > 0 {
			c.Used = f.next - 1
		}
		if f.perGroup {
			// Each group counts from its own largest id: the group that
			// got furthest runs out first. (A scan of the table: no index
			// begins with the column.)
			var m sql.NullInt64
			if err := conn.QueryRowContext(ctx, fmt.Sprintf(`SELECT MAX(%s) FROM %s`, quoteMy(c.Column), quoteMy(c.Table))).Scan(&m); err != nil {
				return nil, fmt.Errorf("read %s.%s (counted per group): %w", c.Table, c.Column, err)
			}
			c.Used = uint64(max(m.Int64, 0))
			c.Type += " (per group)"
		}
		out = append(out, c)
		progress(len(out), len(all))
	}
	return finish(out), nil
}

// checkMySQLVisibility refuses a user who holds privileges on only some
// of the database's tables: information_schema shows a user only the
// tables it has a privilege on, so the others would be left out without a
// word. A privilege on the tables of the database (or of every database),
// the user's own or its role's, shows them all.
func checkMySQLVisibility(ctx context.Context, conn *sql.Conn) error {
	var user, schema string
	if err := conn.QueryRowContext(ctx, `SELECT CURRENT_USER(), DATABASE()`).Scan(&user, &schema); err != nil {
		return fmt.Errorf("read the current user: %w", err)
	}
	whole, err := grantsCoverDatabase(ctx, conn, schema)
	if err != nil {
		return err
	}
	if whole {
		return nil
	}
	var visible []string
	rows, err := conn.QueryContext(ctx, `SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME`)
	if err != nil {
		return fmt.Errorf("read information_schema: %w", err)
	}
	for rows.Next() {
		var t string
		if rows.Scan(&t) == nil {
			visible = append(visible, t)
		}
	}
	rows.Close()
	return fmt.Errorf("%s has privileges on only some tables of %s (it sees %s): information_schema hides every other table from it, so their id columns cannot be read; grant SELECT ON %s.* TO %s, or run the doctor as a user who has it",
		user, quoteMy(schema), describeTables(visible), quoteMy(schema), user)
}

// grantOnAll matches a grant on every table of a database, or of every
// database: GRANT SELECT, INSERT ON `db`.* TO …, GRANT ALL PRIVILEGES ON *.* TO ….
var grantOnAll = regexp.MustCompile("^GRANT (.+?) ON (\\*|`(?:[^`]|``)+`)\\.\\* TO ")

// tablePrivileges are those that show a table in information_schema;
// PROCESS, FILE and the like do not.
var tablePrivileges = map[string]bool{
	"ALL PRIVILEGES": true, "ALL": true, "SELECT": true, "INSERT": true, "UPDATE": true, "DELETE": true, "CREATE": true, "DROP": true,
	"REFERENCES": true, "INDEX": true, "ALTER": true, "CREATE VIEW": true, "SHOW VIEW": true, "TRIGGER": true, "DELETE HISTORY": true,
}

// grantsCoverDatabase reads SHOW GRANTS (the user's, and on MariaDB its
// roles' too: information_schema's privilege tables leave those out) for a
// privilege on every table of schema. A database in a grant may be a LIKE
// pattern (herd\_%).
func grantsCoverDatabase(ctx context.Context, conn *sql.Conn, schema string) (bool, error) {
	rows, err := conn.QueryContext(ctx, `SHOW GRANTS`)
	if err != nil {
		return false, fmt.Errorf("read this user's grants: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			return false, fmt.Errorf("read this user's grants: %w", err)
		}
		m := grantOnAll.FindStringSubmatch(g)
		if m == nil {
			continue
		}
		if m[2] != "*" && !likeMatch(schema, strings.ReplaceAll(m[2][1:len(m[2])-1], "``", "`")) {
			continue
		}
		for _, p := range strings.Split(m[1], ",") {
			if tablePrivileges[strings.ToUpper(strings.TrimSpace(p))] {
				return true, nil
			}
		}
	}
	return false, rows.Err()
}

// likeMatch matches s against a LIKE pattern: % any run, _ any one
// character, \ escapes.
func likeMatch(s, pattern string) bool {
	var b strings.Builder
	b.WriteString("^")
	rs := []rune(pattern)
	for i := 0; i < len(rs); i++ {
		switch r := rs[i]; {
		case r == '\\' && i+1 < len(rs):
			i++
			b.WriteString(regexp.QuoteMeta(string(rs[i])))
		case r == '%':
			b.WriteString("(?s:.*)")
		case r == '_':
			b.WriteString("(?s:.)")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	re, err := regexp.Compile(b.String())
	return err == nil && re.MatchString(s)
}

// describeTables names a few tables for a message.
func describeTables(ts []string) string {
	switch {
	case len(ts) == 0:
		return "no table"
	case len(ts) > 10:
		return strings.Join(ts[:10], ", ") + fmt.Sprintf(" and %d more", len(ts)-10)
	}
	return strings.Join(ts, ", ")
}
