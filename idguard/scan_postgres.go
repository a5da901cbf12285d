package idguard

import (
	"context"
	"database/sql"
	"fmt"
)

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

