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

func planMySQL(ctx context.Context, db *sql.DB, p *WidenPlan, maxAlterRows int64) error {
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(TABLE_ROWS, 0) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?`, p.Table).Scan(&p.Rows); err != nil {
		return err
	}
	if p.Rows < maxAlterRows {
		n, err := countUpTo(ctx, db, quoteMy(p.Table), maxAlterRows)
		if err != nil {
			return err
		}
		p.Rows = max(p.Rows, n)
	}
	rows, err := db.QueryContext(ctx, `SELECT k.TABLE_NAME, k.COLUMN_NAME, k.CONSTRAINT_NAME, r.UPDATE_RULE, r.DELETE_RULE, c.IS_NULLABLE
FROM information_schema.KEY_COLUMN_USAGE k
JOIN information_schema.REFERENTIAL_CONSTRAINTS r ON r.CONSTRAINT_SCHEMA = k.TABLE_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME AND r.TABLE_NAME = k.TABLE_NAME
JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = k.TABLE_SCHEMA AND c.TABLE_NAME = k.TABLE_NAME AND c.COLUMN_NAME = k.COLUMN_NAME
WHERE k.TABLE_SCHEMA = DATABASE() AND k.REFERENCED_TABLE_NAME = ? AND k.REFERENCED_COLUMN_NAME = ?`, p.Table, p.Column)
	if err != nil {
		return err
	}
	type fk struct {
		Reference
		onUpdate, onDelete, nullable string
	}
	var fks []fk
	for rows.Next() {
		var f fk
		if err := rows.Scan(&f.Table, &f.Column, &f.Constraint, &f.onUpdate, &f.onDelete, &f.nullable); err != nil {
			rows.Close()
			return err
		}
		fks = append(fks, f)
		p.References = append(p.References, f.Reference)
	}
	rows.Close()
	if trows, err := db.QueryContext(ctx, `SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = DATABASE() AND EVENT_OBJECT_TABLE = ?`, p.Table); err == nil {
		for trows.Next() {
			var t string
			if trows.Scan(&t) == nil {
				p.Triggers = append(p.Triggers, t)
			}
		}
		trows.Close()
	}
	if grows, err := db.QueryContext(ctx, `SELECT GRANTEE, PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?`, p.Table); err == nil {
		for grows.Next() {
			var who, what string
			if grows.Scan(&who, &what) == nil {
				p.Grants = append(p.Grants, fmt.Sprintf("%s has %s on the table by name: it applies to the new table after the swap, and not to %s", who, what, p.Old))
			}
		}
		grows.Close()
	}
	unsigned := ""
	if p.Unsigned {
		unsigned = " UNSIGNED"
	}
	p.Swap = p.Rows >= maxAlterRows
	if !p.Swap {
		// MySQL will not change the type of a column in a foreign key, on
		// either side: the keys are dropped, both sides widened, and the
		// keys made again as they were.
		for _, f := range fks {
			p.Statements = append(p.Statements, fmt.Sprintf("ALTER TABLE %s DROP FOREIGN KEY %s", quoteMy(f.Table), quoteMy(f.Constraint)))
		}
		for _, f := range fks {
			null := " NOT NULL"
			if f.nullable == "YES" {
				null = " NULL"
			}
			p.Statements = append(p.Statements, fmt.Sprintf("ALTER TABLE %s MODIFY %s BIGINT%s%s", quoteMy(f.Table), quoteMy(f.Column), unsigned, null))
		}
		p.Statements = append(p.Statements, fmt.Sprintf("ALTER TABLE %s MODIFY %s BIGINT%s NOT NULL AUTO_INCREMENT", quoteMy(p.Table), quoteMy(p.Column), unsigned))
		for _, f := range fks {
			p.Statements = append(p.Statements, fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s FOREIGN KEY (%s) REFERENCES %s (%s) ON UPDATE %s ON DELETE %s",
				quoteMy(f.Table), quoteMy(f.Constraint), quoteMy(f.Column), quoteMy(p.Table), quoteMy(p.Column), f.onUpdate, f.onDelete))
		}
		return nil
	}
	if len(fks) > 0 {
		return fmt.Errorf("%s is large (about %d rows) and %d foreign keys reference it: a swap would leave them pointing at the old table and too narrow for new ids. Drop them (and widen their columns) first, or raise --max-alter-rows to ALTER in place", p.Table, p.Rows, len(fks))
	}
	if err := freeName(ctx, db, MySQL, p.Old); err != nil {
		return err
	}
	p.Statements = []string{
		fmt.Sprintf("CREATE TABLE %s LIKE %s", quoteMy(p.Table+"_new"), quoteMy(p.Table)),
		fmt.Sprintf("ALTER TABLE %s MODIFY %s BIGINT%s NOT NULL AUTO_INCREMENT, AUTO_INCREMENT = %d", quoteMy(p.Table+"_new"), quoteMy(p.Column), unsigned, p.oldMax()+1),
		fmt.Sprintf("RENAME TABLE %s TO %s, %s TO %s", quoteMy(p.Table), quoteMy(p.Old), quoteMy(p.Table+"_new"), quoteMy(p.Table)),
	}
	p.Notes = append(p.Notes, "until the copy ends, rows older than the swap are in "+p.Old+" only: reads that miss should look there, and updates or deletes of them must go to "+p.Old+" too (or wait), or the copy brings the old rows back as they were")
	return nil
}

func planPostgres(ctx context.Context, db *sql.DB, p *WidenPlan, c *Column, maxAlterRows int64) error {
	var est float64
	if err := db.QueryRowContext(ctx, `SELECT GREATEST(c.reltuples, 0) FROM pg_class c WHERE c.oid = to_regclass(quote_ident(current_schema()) || '.' || quote_ident($1))`, p.Table).Scan(&est); err != nil {
		return err
	}
	p.Rows = int64(est)
	if p.Rows < maxAlterRows {
		n, err := countUpTo(ctx, db, quotePg(p.Table), maxAlterRows)
		if err != nil {
			return err
		}
		p.Rows = max(p.Rows, n)
	}
	rows, err := db.QueryContext(ctx, `SELECT cl.relname, a.attname, con.conname FROM pg_constraint con
JOIN pg_class cl ON cl.oid = con.conrelid JOIN pg_class ref ON ref.oid = con.confrelid
JOIN pg_attribute ra ON ra.attrelid = ref.oid AND ra.attnum = con.confkey[1]
JOIN pg_attribute a ON a.attrelid = cl.oid AND a.attnum = con.conkey[1]
JOIN pg_namespace n ON n.oid = ref.relnamespace
WHERE con.contype = 'f' AND n.nspname = current_schema() AND ref.relname = $1 AND ra.attname = $2`, p.Table, p.Column)
	if err != nil {
		return err
	}
	for rows.Next() {
		var r Reference
		if err := rows.Scan(&r.Table, &r.Column, &r.Constraint); err != nil {
			rows.Close()
			return err
		}
		p.References = append(p.References, r)
	}
	rows.Close()
	if trows, err := db.QueryContext(ctx, `SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal AND n.nspname = current_schema() AND c.relname = $1`, p.Table); err == nil {
		for trows.Next() {
			var t string
			if trows.Scan(&t) == nil {
				p.Triggers = append(p.Triggers, t)
			}
		}
		trows.Close()
	}
	p.Swap = p.Rows >= maxAlterRows
	seq := quotePg(c.Sequence)
	var identity bool
	if err := db.QueryRowContext(ctx, `SELECT a.attidentity <> '' FROM pg_attribute a WHERE a.attrelid = to_regclass(quote_ident(current_schema()) || '.' || quote_ident($1)) AND a.attname = $2`, p.Table, p.Column).Scan(&identity); err != nil {
		return err
	}
	if !p.Swap {
		for _, r := range p.References {
			p.Statements = append(p.Statements, fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE bigint", quotePg(r.Table), quotePg(r.Column)))
		}
		p.Statements = append(p.Statements, fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE bigint", quotePg(p.Table), quotePg(p.Column)))
		if identity {
			p.Statements = append(p.Statements, fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET MAXVALUE 9223372036854775807", quotePg(p.Table), quotePg(p.Column)))
		} else {
			p.Statements = append(p.Statements, fmt.Sprintf("ALTER SEQUENCE %s AS bigint MAXVALUE 9223372036854775807", seq))
		}
		return nil
	}
	if len(p.References) > 0 {
		return fmt.Errorf("%s is large (about %d rows) and %d foreign keys reference it: a swap would leave them pointing at the old table and too narrow for new ids. Drop them (and widen their columns) first, or raise --max-alter-rows to ALTER in place", p.Table, p.Rows, len(p.References))
	}
	if err := freeName(ctx, db, Postgres, p.Old); err != nil {
		return err
	}
	newT := quotePg(p.Table + "_new")
	p.Statements = []string{
		"BEGIN",
		// The table's lock first: writers wait for the swap (moments)
		// instead of deadlocking on the sequence with it, and then find the
		// new table under the old name.
		fmt.Sprintf("LOCK TABLE %s IN ACCESS EXCLUSIVE MODE", quotePg(p.Table)),
		fmt.Sprintf("CREATE TABLE %s (LIKE %s INCLUDING ALL)", newT, quotePg(p.Table)),
		fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE bigint", newT, quotePg(p.Column)),
	}
	if identity {
		// LIKE gives the new table an identity of its own: it counts on
		// from past the old type's largest value.
		p.Statements = append(p.Statements,
			fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET MAXVALUE 9223372036854775807 RESTART WITH %d", newT, quotePg(p.Column), p.oldMax()+1),
			fmt.Sprintf("ALTER TABLE %s RENAME TO %s", quotePg(p.Table), quotePg(p.Old)),
			fmt.Sprintf("ALTER TABLE %s RENAME TO %s", newT, quotePg(p.Table)))
	} else {
		p.Statements = append(p.Statements,
			fmt.Sprintf("ALTER SEQUENCE %s AS bigint MAXVALUE 9223372036854775807", seq),
			fmt.Sprintf("SELECT setval('%s', GREATEST((SELECT last_value FROM %s), %d))", strings.ReplaceAll(seq, "'", "''"), seq, p.oldMax()),
			fmt.Sprintf("ALTER TABLE %s RENAME TO %s", quotePg(p.Table), quotePg(p.Old)),
			fmt.Sprintf("ALTER TABLE %s RENAME TO %s", newT, quotePg(p.Table)),
			// The sequence belongs to the new table now: dropping the old
			// one once copied must not take the sequence with it.
			fmt.Sprintf("ALTER SEQUENCE %s OWNED BY %s.%s", seq, quotePg(p.Table), quotePg(p.Column)))
	}
	// LIKE copies no privileges: the new table gets the old one's.
	grows, err := db.QueryContext(ctx, `SELECT grantee, privilege_type FROM information_schema.role_table_grants WHERE table_schema = current_schema() AND table_name = $1 AND grantee <> current_user`, p.Table)
	if err != nil {
		return err
	}
	for grows.Next() {
		var who, what string
		if grows.Scan(&who, &what) == nil {
			p.Statements = append(p.Statements, fmt.Sprintf("GRANT %s ON %s TO %s", what, quotePg(p.Table), quotePg(who)))
			p.Grants = append(p.Grants, fmt.Sprintf("%s's %s is granted on the new table too", who, what))
		}
	}
	grows.Close()
	p.Statements = append(p.Statements, "COMMIT")
	p.Notes = append(p.Notes, "new ids start past the old type's largest value: no new id can meet an old one",
		"until the copy ends, rows older than the swap are in "+p.Old+" only: reads that miss should look there, and updates or deletes of them must go to "+p.Old+" too (or wait), or the copy brings the old rows back as they were")
	return nil
}

// freeName refuses a swap whose old table's name is taken: a table left by
// an earlier widen, or an archive of the same name.
func freeName(ctx context.Context, db *sql.DB, d Dialect, name string) error {
	taken, err := tableExists(ctx, db, d, name)
	if err != nil {
		return err
	}
	if taken {
		return fmt.Errorf("a table named %s exists: the swap needs the name for the old table; rename or drop it first (or resume its copy if it is one)", name)
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
