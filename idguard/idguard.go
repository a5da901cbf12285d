// Package idguard watches the headroom of auto-increment, serial, identity
// and sequence-backed id columns in MySQL, MariaDB, PostgreSQL and SQLite
// databases, herd's own or anyone's: how much of each column's range is
// used, how fast it goes, and when it runs out. It also tells an insert
// that failed because the ids ran out from a real duplicate.
package idguard

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
	_ "modernc.org/sqlite"             // the "sqlite" driver
)

// Dialect names a database engine.
type Dialect string

// Dialects.
const (
	MySQL    Dialect = "mysql" // MySQL and MariaDB
	Postgres Dialect = "postgres"
	SQLite   Dialect = "sqlite"
)

// Column is one id column and its headroom.
type Column struct {
	Table    string `json:"table"`
	Column   string `json:"column"`
	Type     string `json:"type"`
	Unsigned bool   `json:"unsigned,omitempty"`
	// Sequence feeds the column on PostgreSQL; its own limit counts too.
	Sequence string `json:"sequence,omitempty"`
	// Used is the last id handed out (0 when none), Max the largest the
	// column can take: the least of the column's type and its sequence.
	Used  uint64  `json:"used,string"`
	Max   uint64  `json:"max,string"`
	Ratio float64 `json:"ratio"`
	// PerDay and DaysLeft come from two readings over time (sampling);
	// zero when there is no such sample.
	PerDay   float64 `json:"per_day,omitempty"`
	DaysLeft float64 `json:"days_left,omitempty"`
}

// Key names the column for matching readings.
func (c Column) Key() string { return c.Table + "." + c.Column }

// typeMax returns the largest value of an integer type.
func typeMax(typ string, unsigned bool) (uint64, bool) {
	t := strings.ToLower(strings.TrimSpace(typ))
	if i := strings.IndexByte(t, '('); i >= 0 {
		t = t[:i]
	}
	t = strings.TrimSuffix(strings.TrimSuffix(t, " unsigned"), " signed")
	signed := map[string]uint64{
		"tinyint": 1<<7 - 1, "smallint": 1<<15 - 1, "int2": 1<<15 - 1, "mediumint": 1<<23 - 1,
		"int": 1<<31 - 1, "integer": 1<<31 - 1, "int4": 1<<31 - 1, "serial": 1<<31 - 1, "smallserial": 1<<15 - 1,
		"bigint": 1<<63 - 1, "int8": 1<<63 - 1, "bigserial": 1<<63 - 1,
	}
	m, ok := signed[t]
	if !ok {
		return 0, false
	}
	if unsigned {
		return m*2 + 1, true
	}
	return m, true
}

// Open connects to a database named by a DSN: mysql://user:pass@host:port/db
// (MySQL and MariaDB), postgres:// or postgresql:// URLs, or a SQLite file
// path (optionally sqlite:).
func Open(dsn string) (*sql.DB, Dialect, error) {
	switch {
	case strings.HasPrefix(dsn, "mysql://"):
		cfg, err := mysqlConfig(dsn)
		if err != nil {
			return nil, "", err
		}
		c, err := mysql.NewConnector(cfg)
		if err != nil {
			return nil, "", err
		}
		return sql.OpenDB(c), MySQL, nil
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		db, err := sql.Open("pgx", dsn)
		return db, Postgres, err
	case dsn == "":
		return nil, "", errors.New("a DSN is required: mysql://…, postgres://… or a SQLite file")
	}
	path := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "file:")
	db, err := sql.Open("sqlite", "file:"+path+"?mode=rw")
	return db, SQLite, err
}

// mysqlConfig turns mysql://user:pass@host:port/db?params into the
// driver's configuration.
func mysqlConfig(dsn string) (*mysql.Config, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, fmt.Errorf("mysql DSN: %w", err)
	}
	cfg := mysql.NewConfig()
	cfg.Net = "tcp"
	cfg.Addr = u.Host
	if u.Port() == "" {
		cfg.Addr = u.Host + ":3306"
	}
	cfg.User = u.User.Username()
	cfg.Passwd, _ = u.User.Password()
	cfg.DBName = strings.TrimPrefix(u.Path, "/")
	if cfg.DBName == "" {
		return nil, errors.New("mysql DSN: name the database: mysql://user@host:3306/dbname")
	}
	cfg.Timeout = 10 * time.Second
	cfg.MultiStatements = false
	for k, v := range u.Query() {
		if cfg.Params == nil {
			cfg.Params = map[string]string{}
		}
		cfg.Params[k] = v[0]
	}
	return cfg, nil
}

// Scan reads every id column of the database's current schema. progress,
// when set, is told how many tables were done of how many.
func Scan(ctx context.Context, db *sql.DB, d Dialect, progress func(done, total int)) ([]Column, error) {
	if progress == nil {
		progress = func(int, int) {}
	}
	switch d {
	case MySQL:
		return scanMySQL(ctx, db, progress)
	case Postgres:
		return scanPostgres(ctx, db, progress)
	case SQLite:
		return scanSQLite(ctx, db, progress)
	}
	return nil, fmt.Errorf("idguard: unknown dialect %q", d)
}

func finish(cs []Column) []Column {
	for i := range cs {
		if cs[i].Max > 0 {
			cs[i].Ratio = float64(cs[i].Used) / float64(cs[i].Max)
		}
	}
	return cs
}

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

func scanPostgres(ctx context.Context, db *sql.DB, progress func(int, int)) ([]Column, error) {
	// Every column fed by a sequence: owned ones (serial, identity) and
	// those whose default calls nextval on one. The column's type and the
	// sequence's both bound it: an integer column on a bigint sequence
	// dies at the column's maximum.
	rows, err := db.QueryContext(ctx, `WITH fed AS (
  SELECT d.refobjid AS rel, d.refobjsubid AS attnum, d.objid AS seq
  FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
  UNION
  SELECT ad.adrelid, ad.adnum, d.refobjid
  FROM pg_attrdef ad JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
)
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), s.relname, ps.data_type, ps.start_value, ps.min_value, ps.max_value, ps.increment_by,
  ps.last_value, has_sequence_privilege(s.oid, 'SELECT') OR has_sequence_privilege(s.oid, 'USAGE')
FROM fed JOIN pg_class s ON s.oid = fed.seq AND s.relkind = 'S'
JOIN pg_class c ON c.oid = fed.rel JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = fed.attnum
JOIN pg_sequences ps ON ps.schemaname = n.nspname AND ps.sequencename = s.relname
WHERE n.nspname = current_schema() ORDER BY c.relname, a.attname`)
	if err != nil {
		return nil, fmt.Errorf("read pg_catalog: %w", err)
	}
	defer rows.Close()
	var out []Column
	for rows.Next() {
		var c Column
		var seqType string
		var start, seqMin, seqMax, inc int64
		var last sql.NullInt64
		var allowed bool
		if err := rows.Scan(&c.Table, &c.Column, &c.Type, &c.Sequence, &seqType, &start, &seqMin, &seqMax, &inc, &last, &allowed); err != nil {
			return nil, err
		}
		if !allowed {
			// pg_sequences shows no last value without the privilege: a
			// silent 0% would hide a full column.
			return nil, fmt.Errorf("no privilege to read sequence %s of %s.%s: grant SELECT on it to this user", c.Sequence, c.Table, c.Column)
		}
		colMax, ok := typeMax(c.Type, false)
		if !ok {
			colMax = uint64(max(seqMax, 0)) // numeric and the like: the sequence bounds it
		}
		if inc >= 0 {
			c.Max = min(colMax, uint64(max(seqMax, 0)))
			if last.Valid {
				c.Used = uint64(max(last.Int64, 0))
			}
		} else {
			// Counting down: the range is from the start to the least of
			// the sequence's minimum and the column's.
			floor := max(seqMin, -int64(min(colMax, 1<<63-1))-1)
			c.Max = uint64(start - floor)
			if last.Valid {
				c.Used = uint64(max(start-last.Int64, 0))
			}
		}
		out = append(out, c)
		progress(len(out), 0)
	}
	return finish(out), rows.Err()
}

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
		// The INTEGER PRIMARY KEY, when there is one, is the rowid.
		cols, err := db.QueryContext(ctx, `SELECT name, type, pk FROM pragma_table_info(?)`, t.name)
		if err != nil {
			return nil, err
		}
		for cols.Next() {
			var name, typ string
			var pk int
			if cols.Scan(&name, &typ, &pk) == nil && pk == 1 && strings.EqualFold(typ, "INTEGER") {
				c.Column, c.Type = name, "INTEGER PRIMARY KEY"
			}
		}
		cols.Close()
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

// Sample reads the columns twice, interval apart, and fills in the rate
// of use and the days left.
func Sample(ctx context.Context, db *sql.DB, d Dialect, interval time.Duration, progress func(done, total int)) ([]Column, error) {
	first, err := Scan(ctx, db, d, progress)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(interval):
	}
	second, err := Scan(ctx, db, d, progress)
	if err != nil {
		return nil, err
	}
	return Growth(first, second, time.Since(start)), nil
}

// Growth fills in the rate and days left of now's columns from an earlier
// reading taken elapsed before.
func Growth(before, now []Column, elapsed time.Duration) []Column {
	prev := map[string]uint64{}
	for _, c := range before {
		prev[c.Key()] = c.Used
	}
	for i, c := range now {
		p, ok := prev[c.Key()]
		if !ok || c.Used <= p || elapsed <= 0 || c.Max <= c.Used {
			continue
		}
		now[i].PerDay = float64(c.Used-p) / elapsed.Hours() * 24
		now[i].DaysLeft = float64(c.Max-c.Used) / now[i].PerDay
	}
	return now
}

// FormatCount prints a large count with thousands separators.
func FormatCount(n uint64) string {
	s := strconv.FormatUint(n, 10)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}
