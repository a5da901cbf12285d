package idguard

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// DefaultMaxAlterRows is the table size below which widening is a plain
// ALTER: a copy of the table that blocks writes for a while. Above it the
// table is swapped for an empty BIGINT one and its rows copied back.
const DefaultMaxAlterRows = 1_000_000

// oldMax is the largest value of the column's old type: the swapped-in
// table's counter starts past it, so no new id can meet an old row's,
// whatever reached the old table between the swap's steps.
func (p *WidenPlan) oldMax() uint64 {
	m, ok := typeMax(p.typeName(), p.Unsigned)
	if !ok {
		return 1<<31 - 1
	}
	return m
}

// typeName is the column's type without display width or signedness.
func (p *WidenPlan) typeName() string {
	t := strings.ToLower(p.Type)
	if i := strings.IndexAny(t, "( "); i >= 0 {
		t = t[:i]
	}
	return t
}

// Reference is a foreign-key column that points at the widened column.
type Reference struct {
	Table, Column, Constraint string
}

// WidenPlan is what widening a column takes.
type WidenPlan struct {
	Dialect  Dialect
	Table    string
	Column   string
	Type     string // the column's type now
	Unsigned bool
	Rows     int64 // estimated
	// Swap is true for a large table: new table, atomic rename, copy.
	Swap       bool
	Old        string // the old table's name after the swap
	References []Reference
	Triggers   []string
	Grants     []string
	Statements []string // the plan, as SQL
	Notes      []string
	// LockTimeout bounds each try of a swap's lock on the table (RENAME
	// TABLE on MySQL, LOCK TABLE on PostgreSQL): while it waits behind a
	// long transaction, every writer of the table waits behind it.
	// LockTries is how many tries, with a growing pause between them.
	// Zero means DefaultLockTimeout and DefaultLockTries.
	LockTimeout time.Duration
	LockTries   int
}

// String prints the plan for a person.
func (p *WidenPlan) String() string {
	var b strings.Builder
	how := "ALTER in place (small table)"
	if p.Swap {
		how = "swap for a new BIGINT table, then copy the rows back (large table)"
	}
	fmt.Fprintf(&b, "widen %s.%s (%s, about %d rows) to BIGINT: %s\n", p.Table, p.Column, p.Type, p.Rows, how)
	for _, s := range p.Statements {
		fmt.Fprintf(&b, "  %s;\n", s)
	}
	if p.Swap {
		fmt.Fprintf(&b, "  then copy %s into %s in primary-key chunks, checkpointed in herd_widen_checkpoints, and verify the counts\n", p.Old, p.Table)
	}
	for _, r := range p.References {
		fmt.Fprintf(&b, "  foreign key %s.%s (%s) references it\n", r.Table, r.Column, r.Constraint)
	}
	for _, t := range p.Triggers {
		fmt.Fprintf(&b, "  trigger %s is on the table: check it after the swap\n", t)
	}
	for _, g := range p.Grants {
		fmt.Fprintf(&b, "  grant: %s\n", g)
	}
	for _, n := range p.Notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	return b.String()
}

// ErrNoColumn is a table without the id column asked for.
var ErrNoColumn = errors.New("no such auto-increment or sequence-backed column")

// PlanWiden works out how to widen table.column (the table's id column
// when column is empty).
func PlanWiden(ctx context.Context, db *sql.DB, d Dialect, table, column string, maxAlterRows int64) (*WidenPlan, error) {
	cols, err := Scan(ctx, db, d, nil)
	if err != nil {
		return nil, err
	}
	var c *Column
	for i := range cols {
		if cols[i].Table == table && (column == "" || cols[i].Column == column) {
			c = &cols[i]
			break
		}
	}
	if c == nil {
		return nil, fmt.Errorf("%s.%s: %w", table, column, ErrNoColumn)
	}
	p := &WidenPlan{Dialect: d, Table: c.Table, Column: c.Column, Type: c.Type, Unsigned: c.Unsigned, Old: c.Table + "_old"}
	if m, ok := typeMax(p.typeName(), false); ok && m >= 1<<63-1 {
		return nil, fmt.Errorf("%s.%s is %s already: 64 bits, nothing to widen", p.Table, p.Column, p.Type)
	}
	switch d {
	case MySQL:
		err = planMySQL(ctx, db, p, maxAlterRows)
	case Postgres:
		err = planPostgres(ctx, db, p, c, maxAlterRows)
	default:
		err = fmt.Errorf("SQLite ids are 64-bit already: nothing to widen")
	}
	return p, err
}

// countUpTo counts a table's rows, stopping at limit: the planner's
// estimate can be far off (a table never analyzed says 0), and a bounded
// count costs no more than reading limit keys.
func countUpTo(ctx context.Context, db *sql.DB, table string, limit int64) (int64, error) {
	var n int64
	err := db.QueryRowContext(ctx, fmt.Sprintf(`SELECT COUNT(*) FROM (SELECT 1 AS one FROM %s LIMIT %d) k`, table, limit)).Scan(&n)
	return n, err
}

// freeNames refuses a swap whose old or new table's name is taken: a
// table left by an earlier widen, or an archive of the same name.
func freeNames(ctx context.Context, db *sql.DB, d Dialect, p *WidenPlan) error {
	for _, n := range []struct{ name, role string }{{p.Old, "old"}, {p.Table + "_new", "new"}} {
		taken, err := tableExists(ctx, db, d, n.name)
		if err != nil {
			return err
		}
		if taken {
			return fmt.Errorf("a table named %s exists: the swap needs the name for the %s table; rename or drop it first (or resume its copy if it is one)", n.name, n.role)
		}
	}
	return nil
}

// tableExists reports whether the current schema holds a table of that
// name (MySQL and PostgreSQL).
func tableExists(ctx context.Context, db *sql.DB, d Dialect, name string) (bool, error) {
	var n int
	q := `SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?`
	if d == Postgres {
		q = `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1`
	}
	if err := db.QueryRowContext(ctx, q, name).Scan(&n); err != nil {
		return false, err
	}
	return n > 0, nil
}

func quoteMy(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }
func quotePg(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
