package sqldb

import (
	"context"
	"strings"
	"time"

	"github.com/herd-iot/herd"
)

// QueryDevices answers the scoped device query. The SQL carries the tenant
// and the actor's covering node paths as byte ranges, the allow-listed
// filters as bound parameters, and a keyset position; never device ids.
func (s *DeviceService) QueryDevices(ctx context.Context, q herd.DeviceQuery) (*herd.DevicePage, error) {
	start := time.Now()
	a, err := actor(ctx)
	if err != nil {
		return nil, err
	}
	if err := q.Normalize(); err != nil {
		return nil, err
	}
	tx, err := s.db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()

	scope, err := tx.queryScope(ctx, a, q)
	if err != nil {
		return nil, err
	} else if err := s.db.openCursor(&q, scope); err != nil {
		return nil, err
	}
	page := &herd.DevicePage{Items: []*herd.Device{}}
	if scope.Empty() {
		return page, nil
	}

	var where strings.Builder
	args := whereScope(&where, scope)
	args = whereFilters(&where, q.Filters, args)
	args = whereSearch(&where, q.Search, scope.TenantID, args)

	// Pick the access path from the subtree counts the nodes keep: the
	// planners cannot tell from a range on a path how many devices it holds.
	p, err := tx.planQuery(ctx, q, scope)
	if err != nil {
		return nil, err
	}
	tc, err := s.db.cacheFor(ctx, q, scope, p)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		page, ok, err := s.queryCached(ctx, tx, tc, q, scope, where.String(), args)
		if err != nil {
			return nil, err
		} else if ok {
			s.db.metrics.observeDeviceQuery("cache", q.After == nil, start)
			return page, nil
		}
	}
	planName := "walk"
	if p.small {
		planName = "scope"
	}
	if searchFilter(q) && p.small {
		// A search text rare in the tenant drives the page through the
		// trigram index (see chooseSearchDriver).
		drv, ok, err := tx.chooseSearchDriver(ctx, q, scope.TenantID, p.inScope)
		if err != nil {
			return nil, err
		} else if ok {
			where.WriteString(" AND devices.id IN (" + drv.sql + ")")
			args = append(args, drv.args...)
			p.searchDriven, planName = true, "search_index"
		}
	}
	defer func() { s.db.metrics.observeDeviceQuery(planName, q.After == nil, start) }()

	// The first page counts, and the count can cost more than the page (it
	// has to see every match up to the cap), so it runs beside the page on
	// a connection of its own: the answer waits for the slower of the two,
	// not their sum. It reads its own snapshot, a moment apart from the
	// page's; a count is a figure for people, not a consistency boundary.
	var count int64
	var capped bool
	var countErr error
	counted := make(chan struct{})
	if q.After == nil {
		countSQL, countArgs := where.String(), append([]any(nil), args...)
		go func() {
			defer close(counted)
			count, countErr = s.db.countDevices(ctx, countSQL, countArgs)
		}()
	} else {
		// Only the first page counts; the cursor carries its figure on.
		count, capped = q.After.Count, q.After.CountCapped
		close(counted)
	}
	defer func() { <-counted }() // never leave the count running past the request

	// A walk passes at most p.walkCap entries of a segment's sort index.
	// When it fills less than the page and the segment goes on past the
	// cap, the scope lies elsewhere in the sort order than the plan assumed
	// (devices are created site by site, so a site is a run of ids, not a
	// sprinkle): the rest of the page is read the scope's way, from the
	// last row found. The walk and the check of its cap each cost about as
	// much as that read (see planQuery).
	small := p.small
	want := q.Limit + 1 // one more than the page tells whether a next page exists
	var segs []segment
	if key, ok := herd.LabelKeyOf(q.Sort.Field); ok {
		sqlText, sortArgs := labelSortSQL(key, q, where.String(), args, want)
		if _, err := readDevices(ctx, tx, page, sqlText, sortArgs); err != nil {
			return nil, err
		}
	} else {
		segs = keysetSegments(q, s.db.dialect)
	}
	for i := 0; i < len(segs) && len(page.Items) < want; i++ {
		seg := segs[i]
		need := want - len(page.Items)
		var sqlText string
		var segArgs []any
		if small || p.walkCap == 0 {
			sqlText = s.db.pageSQL(q, small, p.searchDriven, where.String()+seg.where, seg.order)
			segArgs = append(append(append([]any(nil), args...), seg.args...), need)
		} else {
			sqlText, segArgs = s.db.walkSQL(q, scope, where.String(), args, seg, p.walkCap, need)
		}
		n, err := readDevices(ctx, tx, page, sqlText, segArgs)
		if err != nil {
			return nil, err
		}
		if small || p.walkCap == 0 || n >= need {
			continue
		}
		if more, err := tx.pastCap(ctx, s.db, q, scope.TenantID, seg, p.walkCap); err != nil {
			return nil, err
		} else if !more {
			continue // the walk reached the segment's end: it saw every row
		}
		small, planName = true, "walk_capped"
		rest := q
		if len(page.Items) > 0 {
			last := page.Items[len(page.Items)-1]
			v, null := last.FieldValue(q.Sort.Field)
			rest.After = &herd.DeviceCursor{Null: null, Value: v, ID: last.ID}
		}
		segs, i = keysetSegments(rest, s.db.dialect), -1
	}

	<-counted
	if countErr != nil {
		return nil, countErr
	}
	if q.After == nil && count > herd.CountCap {
		count, capped = herd.CountCap, true
	}
	page.Count, page.CountCapped = count, capped
	more := len(page.Items) > q.Limit
	if more {
		page.Items = page.Items[:q.Limit]
	}
	// The labels before the cursor: a sort on a label takes its position
	// from them.
	if err := tx.attachLabels(ctx, scope.TenantID, page.Items); err != nil {
		return nil, err
	}
	if more {
		page.NextCursor = q.EncodeCursor(s.db.cursorKey.For(scope), page.Items[q.Limit-1], page.Count, page.CountCapped)
	}
	return page, nil
}

// queryScope returns the devices the actor may query: a super-admin names
// the tenant and sees all of it, a user sees what their grants cover.
func (tx *Tx) queryScope(ctx context.Context, a *herd.Actor, q herd.DeviceQuery) (herd.Scope, error) {
	if a.Super {
		if q.TenantID == 0 {
			return herd.Scope{}, herd.Errorf(herd.EINVALID, "tenant_id is required for a super-admin")
		}
		root, err := tx.rootPath(ctx, q.TenantID)
		if err != nil {
			return herd.Scope{}, err
		}
		return herd.Scope{TenantID: q.TenantID, Paths: []string{root}}, nil
	}
	if q.TenantID != 0 && q.TenantID != a.TenantID {
		return herd.Scope{}, herd.Errorf(herd.ENOTFOUND, "tenant %d not found", q.TenantID)
	}
	return a.Scope(herd.RoleViewer), nil
}

// countDevices counts the devices matching where, stopping at one past the
// cap: exact below it, "10,000+" above, so a huge scope costs a bounded scan.
func (db *DB) countDevices(ctx context.Context, where string, args []any) (int64, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var n int64
	err = tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM devices WHERE `+where+` LIMIT ?) c`, append(args, herd.CountCap+1)...).Scan(&n)
	return n, err
}

// readDevices appends the rows of a page statement to the page and says
// how many it read.
func readDevices(ctx context.Context, tx *Tx, page *herd.DevicePage, sqlText string, args []any) (int, error) {
	rows, err := tx.QueryContext(ctx, sqlText, args...)
	if err != nil {
		return 0, err
	}
	n := 0
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			rows.Close()
			return n, err
		}
		page.Items = append(page.Items, d)
		n++
	}
	if err := rows.Close(); err != nil {
		return n, err
	}
	return n, rows.Err()
}

// whereScope writes the tenant and path-range condition of a scope.
func whereScope(b *strings.Builder, scope herd.Scope) []any {
	args := []any{scope.TenantID}
	b.WriteString("tenant_id = ? AND (")
	for i, p := range scope.Paths {
		if i > 0 {
			b.WriteString(" OR ")
		}
		b.WriteString("(path >= ? AND path < ?)")
		args = append(args, p, herd.PathUpperBound(p))
	}
	b.WriteString(")")
	return args
}

var sqlOps = map[string]string{herd.OpEq: "=", herd.OpNe: "<>", herd.OpLt: "<", herd.OpLe: "<=", herd.OpGt: ">", herd.OpGe: ">="}

// whereFilters appends the filters. Field names come from herd.DeviceFields
// (the parser refuses anything else), values are always bound. The
// condition is on the devices table, named devices in the statement (a
// label filter refers to it from its subquery).
func whereFilters(b *strings.Builder, filters []herd.DeviceFilter, args []any) []any {
	for _, f := range filters {
		if f.Op == herd.OpContains {
			args = whereContains(b, f, args)
			continue
		}
		if key, ok := herd.LabelKeyOf(f.Field); ok {
			args = whereLabel(b, key, f, args)
			continue
		}
		if _, ok := herd.DeviceFields[f.Field]; !ok {
			panic("sqldb: unvalidated filter field " + f.Field)
		}
		col := f.Field
		b.WriteString(" AND ")
		switch f.Op {
		case herd.OpIn:
			b.WriteString(col + " IN (" + strings.TrimSuffix(strings.Repeat("?,", len(f.Values)), ",") + ")")
			args = append(args, f.Values...)
		case herd.OpPrefix:
			prefix := f.Values[0].(string)
			if upper, ok := herd.PrefixUpperBound(prefix); ok {
				b.WriteString("(" + col + " >= ? AND " + col + " < ?)")
				args = append(args, prefix, upper)
			} else {
				b.WriteString(col + " >= ?")
				args = append(args, prefix)
			}
		default:
			b.WriteString(col + " " + sqlOps[f.Op] + " ?")
			args = append(args, f.Values[0])
		}
	}
	return args
}

// segment is one index-friendly part of a keyset walk.
type segment struct {
	where string
	args  []any
	order string
	// walkOrder is order over the capped walk's columns (see walkSQL).
	walkOrder string
}

// keysetSegments splits the walk of a nullable sort column into its NULL
// rows and its non-NULL rows, each a plain index range: one ORDER BY over
// both with a keyset "(col, id) > (v, id) OR col IS NULL" would defeat the
// index. NULLs sort first: ascending walks start with them, descending walks
// end with them. The cursor skips the segments it has left behind.
func keysetSegments(q herd.DeviceQuery, dialect Dialect) []segment {
	col := q.Sort.Field
	field := herd.DeviceFields[col]
	dir, cmp, nulls := "ASC", ">", " NULLS FIRST"
	if q.Sort.Desc {
		dir, cmp, nulls = "DESC", "<", " NULLS LAST"
	}
	if dialect != Postgres || !field.Nullable {
		// SQLite already puts NULLs first ascending and last descending.
		nulls = ""
	}
	values := segment{order: col + " " + dir + nulls + ", id " + dir, walkOrder: "wsort " + dir + nulls + ", wid " + dir}
	if col == "id" {
		values.order, values.walkOrder = "id "+dir, "wid "+dir
	}
	c := q.After
	if c != nil && !c.Null {
		if col == "id" {
			values.where = " AND id " + cmp + " ?"
			values.args = []any{c.ID}
		} else {
			values.where = " AND (" + col + ", id) " + cmp + " (?, ?)"
			values.args = []any{c.Value, c.ID}
		}
	}
	if !field.Nullable {
		return []segment{values}
	}
	values.where = " AND " + col + " IS NOT NULL" + values.where
	nullSeg := segment{where: " AND " + col + " IS NULL", order: "id " + dir, walkOrder: "wid " + dir}
	if c != nil && c.Null {
		nullSeg.where += " AND id " + cmp + " ?"
		nullSeg.args = []any{c.ID}
	}
	switch {
	case !q.Sort.Desc && c != nil && !c.Null:
		return []segment{values} // past the NULLs already
	case !q.Sort.Desc:
		return []segment{nullSeg, values}
	case c != nil && c.Null:
		return []segment{nullSeg} // past the values already
	default:
		return []segment{values, nullSeg}
	}
}
