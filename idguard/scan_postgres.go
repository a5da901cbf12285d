package idguard

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// fedColumns lists every column of the current schema fed by a sequence:
// owned ones (serial, identity) and those whose default calls nextval on
// one. The sequence is joined by its OID (pg_depend, pg_attrdef's
// regclass), never by name in the table's schema: a sequence may live in
// another schema, and a same-named one in the table's schema is not it.
// Its name is its regclass text, qualified when it is not on the
// search_path, so it can be put into SQL as it is.
const fedColumns = `WITH fed AS (
  SELECT d.refobjid AS rel, d.refobjsubid AS attnum, d.objid AS seq
  FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
  UNION
  SELECT ad.adrelid, ad.adnum, d.refobjid
  FROM pg_attrdef ad JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
)
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), s.oid::regclass::text, ps.seqstart, ps.seqmin, ps.seqmax, ps.seqincrement,
  has_sequence_privilege(s.oid, 'SELECT'), has_sequence_privilege(s.oid, 'USAGE')
FROM fed JOIN pg_class s ON s.oid = fed.seq AND s.relkind = 'S'
JOIN pg_sequence ps ON ps.seqrelid = s.oid
JOIN pg_class c ON c.oid = fed.rel JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = fed.attnum
WHERE n.nspname = current_schema() ORDER BY c.relname, a.attname`

func scanPostgres(ctx context.Context, db *sql.DB, progress func(int, int)) ([]Column, error) {
	if err := checkSearchPath(ctx, db); err != nil {
		return nil, err
	}
	type fed struct {
		c                  Column
		start, lo, hi, inc int64
		readable, usable   bool
	}
	rows, err := db.QueryContext(ctx, fedColumns)
	if err != nil {
		return nil, fmt.Errorf("read pg_catalog: %w", err)
	}
	var feds []fed
	for rows.Next() {
		var f fed
		if err := rows.Scan(&f.c.Table, &f.c.Column, &f.c.Type, &f.c.Sequence, &f.start, &f.lo, &f.hi, &f.inc, &f.readable, &f.usable); err != nil {
			rows.Close()
			return nil, err
		}
		feds = append(feds, f)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read pg_catalog: %w", err)
	}
	out := make([]Column, 0, len(feds))
	for _, f := range feds {
		c := f.c
		// The sequence's own last_value is the last value handed out when
		// is_called, and the next one to hand out when not (a fresh
		// sequence, setval(…, n, false), ALTER SEQUENCE … RESTART), where
		// pg_sequences shows NULL: a silent 0% would hide a full column.
		var last int64
		switch {
		case f.readable:
			var called bool
			if err := db.QueryRowContext(ctx, `SELECT last_value, is_called FROM `+c.Sequence).Scan(&last, &called); err != nil {
				return nil, fmt.Errorf("read sequence %s of %s.%s: %w", c.Sequence, c.Table, c.Column, err)
			}
			if !called {
				last -= f.inc
			}
		case f.usable:
			// USAGE only: pg_sequence_last_value (what pg_sequences shows)
			// is NULL when not is_called, which cannot be told from a fresh
			// sequence. (It is called for this sequence alone: over the
			// view, it would lock every sequence of the database.)
			var shown sql.NullInt64
			if err := db.QueryRowContext(ctx, `SELECT pg_sequence_last_value($1::regclass)`, c.Sequence).Scan(&shown); err != nil {
				return nil, fmt.Errorf("read sequence %s of %s.%s: %w", c.Sequence, c.Table, c.Column, err)
			}
			if shown.Valid {
				last = shown.Int64
				break
			}
			fallthrough
		default:
			return nil, fmt.Errorf("cannot read sequence %s of %s.%s (no privilege, or it was set back and only SELECT on it shows where): grant SELECT on it to this user", c.Sequence, c.Table, c.Column)
		}
		colMax, ok := typeMax(c.Type, false)
		if !ok {
			colMax = uint64(max(f.hi, 0)) // numeric and the like: the sequence bounds it
		}
		if f.inc >= 0 {
			c.Max = min(colMax, uint64(max(f.hi, 0)))
			c.Used = uint64(max(last, 0))
		} else {
			// Counting down: the range is from the start to the least of
			// the sequence's minimum and the column's.
			floor := max(f.lo, -int64(min(colMax, 1<<63-1))-1)
			c.Max = uint64(f.start - floor)
			c.Used = uint64(max(f.start-last, 0))
		}
		out = append(out, c)
		progress(len(out), len(feds))
	}
	return finish(out), nil
}

// checkSearchPath refuses a search_path whose first schema does not exist
// or is not usable by this user: PostgreSQL skips such a schema without a
// word, so the doctor would read another schema (or none) and call it
// fine.
func checkSearchPath(ctx context.Context, db *sql.DB) error {
	var path string
	var current sql.NullString
	if err := db.QueryRowContext(ctx, `SELECT current_setting('search_path'), current_schema()`).Scan(&path, &current); err != nil {
		return fmt.Errorf("read search_path: %w", err)
	}
	for _, name := range strings.Split(path, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		implicitUser := name == `"$user"` || name == "$user"
		if strings.HasPrefix(name, `"`) && strings.HasSuffix(name, `"`) && len(name) >= 2 {
			name = strings.ReplaceAll(name[1:len(name)-1], `""`, `"`)
		} else {
			name = strings.ToLower(name)
		}
		if implicitUser {
			if err := db.QueryRowContext(ctx, `SELECT session_user`).Scan(&name); err != nil {
				return fmt.Errorf("read search_path: %w", err)
			}
		}
		var exists, usable bool
		if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1),
  COALESCE((SELECT has_schema_privilege(oid, 'USAGE') FROM pg_namespace WHERE nspname = $1), false)`, name).Scan(&exists, &usable); err != nil {
			return fmt.Errorf("read search_path: %w", err)
		}
		switch {
		case implicitUser && !exists:
			continue // the default "$user", public: no schema of the user's name is the usual case
		case !exists:
			return fmt.Errorf("search_path %q: schema %q does not exist", path, name)
		case !usable:
			return fmt.Errorf("search_path %q: this user has no USAGE on schema %q: grant it, or name a schema this user can read", path, name)
		}
		if !current.Valid || current.String != name {
			return fmt.Errorf("search_path %q: the current schema is %q, not %q", path, current.String, name)
		}
		return nil
	}
	if !current.Valid {
		return errors.New("search_path names no schema: set one in the DSN (?search_path=…)")
	}
	return nil
}
