package idguard

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

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
	if err := freeNames(ctx, db, MySQL, p); err != nil {
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
	seq := c.Sequence // its regclass text: quoted, and qualified when off the search_path
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
	if err := freeNames(ctx, db, Postgres, p); err != nil {
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
