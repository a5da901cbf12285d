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
