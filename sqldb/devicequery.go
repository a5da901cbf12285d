package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
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
	}
	page := &herd.DevicePage{Items: []*herd.Device{}}
	if scope.Empty() {
		return page, nil
	}

	var where strings.Builder
	args := whereScope(&where, scope)
	args = whereFilters(&where, q.Filters, args)

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
	// last row found, and the walk has cost no more than that read.
	small := p.small
	want := q.Limit + 1 // one more than the page tells whether a next page exists
	segs := keysetSegments(q, s.db.dialect)
	for i := 0; i < len(segs) && len(page.Items) < want; i++ {
		seg := segs[i]
		need := want - len(page.Items)
		var sqlText string
		var segArgs []any
		if small || p.walkCap == 0 {
			sqlText = s.db.pageSQL(q, small, where.String()+seg.where, seg.order)
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
	if len(page.Items) > q.Limit {
		page.Items = page.Items[:q.Limit]
		page.NextCursor = q.EncodeCursor(page.Items[q.Limit-1], page.Count, page.CountCapped)
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

// plan is the access path chosen for a page, and the sizes it was chosen by.
type plan struct {
	small   bool    // read the whole scope and sort it, rather than walk a sort index
	inScope float64 // devices in the scope
	total   float64 // devices in the tenant
	// walkCap bounds the sort index entries a walk may pass in one keyset
	// segment before it gives up and reads the scope; zero leaves the walk
	// to the engine unbounded (a sort on path, whose index range is the
	// scope, or a filter that finds a handful of rows through its own index).
	walkCap int64
}

// planQuery decides between the two access paths of a page. Reading the
// whole scope through the path index and sorting it costs about one row
// fetch per device in scope. Walking the sort column's index in order costs
// the index entries passed until the page is full — the scope's share of the
// tenant and the filters' selectivity decide how many — at about a fifth of a
// row fetch each (the scope test is made on the index entry), plus a fetch
// for each in-scope entry the filters then test. Selectivity is unknown, so
// each filter is assumed to keep a quarter of the rows.
func (tx *Tx) planQuery(ctx context.Context, q herd.DeviceQuery, scope herd.Scope) (plan, error) {
	// The covering paths are disjoint subtrees: the scope holds the sum of
	// their counts; the tenant, its root's.
	var root int64
	scoped := map[int64]bool{}
	args := []any{scope.TenantID}
	for _, path := range scope.Paths {
		pathIDs, err := herd.PathIDs(path)
		if err != nil {
			return plan{}, err
		}
		root = pathIDs[0]
		scoped[pathIDs[len(pathIDs)-1]] = true
		args = append(args, pathIDs[len(pathIDs)-1])
	}
	args = append(args, root)
	rows, err := tx.QueryContext(ctx, `SELECT id, device_count FROM nodes WHERE tenant_id = ? AND id IN (`+strings.TrimSuffix(strings.Repeat("?,", len(args)-1), ",")+`)`, args...)
	if err != nil {
		return plan{}, err
	}
	defer rows.Close()
	var inScope, total float64
	for rows.Next() {
		var id, n int64
		if err := rows.Scan(&id, &n); err != nil {
			return plan{}, err
		}
		if id == root {
			total = float64(n)
		}
		if scoped[id] {
			inScope += float64(n)
		}
	}
	if err := rows.Err(); err != nil {
		return plan{}, err
	}
	p := plan{inScope: inScope, total: total, small: true}
	if !sortIndexed[q.Sort.Field] {
		return p, nil // no index yields this order: the scope is read and sorted
	}
	sel := 1.0
	for range q.Filters {
		sel *= 0.25
	}
	want := float64(q.Limit + 1)
	if inScope <= want {
		return p, nil
	}
	scopeCost := inScope
	if statusFilter(q) {
		scopeCost *= 0.25 // the scope is read through the status index
	}
	walked := min(total, want*total/(inScope*sel))
	walkCost := 0.2*walked + min(inScope, want/sel)
	p.small = walkCost >= scopeCost
	if !p.small && q.Sort.Field != "path" && !selectiveFilter(q) {
		// The estimate assumes the scope is spread evenly through the sort
		// order; a site created in one go is a run of ids at one end. The
		// cap is the walk that costs as much as reading the scope, so a
		// wrong guess costs the walk, the check that it was cut short
		// (as many index entries again) and the scope read: about three
		// times the scope read, never the tenant.
		p.walkCap = int64(max(math.Ceil(scopeCost/0.2), want))
	}
	return p, nil
}

// mayPass bounds the index entries the plan may read for one page of a
// query whose keyset walk has the given number of segments: the scope's
// entries of the path index when it reads the scope; for a capped walk,
// the cap and its check in each segment, then the scope; for an unbounded
// walk, the tenant's whole sort index.
func (p plan) mayPass(segments int) int64 {
	switch {
	case p.small:
		return int64(p.inScope)
	case p.walkCap > 0:
		return int64(segments)*2*p.walkCap + int64(p.inScope)
	}
	return int64(p.total)
}

// selectiveFilter reports whether a filter finds a handful of rows through
// an index of its own; the engine's planner then knows best.
func selectiveFilter(q herd.DeviceQuery) bool {
	for _, f := range q.Filters {
		if selectiveFields[f.Field] && (f.Op == herd.OpEq || f.Op == herd.OpIn || f.Op == herd.OpPrefix) {
			return true
		}
	}
	return false
}

// walkSQL returns the capped walk of one keyset segment: the inner select
// reads at most walkCap entries of the sort index in order (each index
// holds id and path, so no row is fetched for it), the outer one keeps the
// entries in scope, fetches their rows, tests the filters on them and stops
// at need rows. Both engines keep the inner order and stop early (SQLite
// runs it as a co-routine, PostgreSQL as a Limit over an index scan), so a
// walk that finds its rows soon reads no further than an unbounded one.
// The scope is tested twice: on the index entry, so rows of other sites
// are never fetched, and with the tenant on the row, as every query does.
func (db *DB) walkSQL(q herd.DeviceQuery, scope herd.Scope, where string, args []any, seg segment, walkCap int64, need int) (string, []any) {
	cols := "id AS wid, path AS wpath"
	if q.Sort.Field != "id" {
		cols += ", " + q.Sort.Field + " AS wsort"
	}
	from := "devices"
	if db.dialect == SQLite {
		from += " INDEXED BY " + sortIndex(q)
	}
	var b strings.Builder
	b.WriteString(`SELECT ` + deviceColumns + ` FROM (SELECT ` + cols + ` FROM ` + from + ` WHERE tenant_id = ?` + seg.where + ` ORDER BY ` + seg.order + ` LIMIT ?) w JOIN devices ON devices.id = w.wid WHERE (`)
	walkArgs := append(append([]any{scope.TenantID}, seg.args...), walkCap)
	for i, p := range scope.Paths {
		if i > 0 {
			b.WriteString(" OR ")
		}
		b.WriteString("(wpath >= ? AND wpath < ?)")
		walkArgs = append(walkArgs, p, herd.PathUpperBound(p))
	}
	b.WriteString(`) AND ` + where + ` ORDER BY ` + seg.walkOrder + ` LIMIT ?`)
	walkArgs = append(append(walkArgs, args...), need)
	return b.String(), walkArgs
}

// pastCap reports whether the segment's sort index holds more than walkCap
// entries after the keyset, that is whether a capped walk that came back
// short was cut off rather than at the segment's end. It reads index
// entries only, at most walkCap of them.
func (tx *Tx) pastCap(ctx context.Context, db *DB, q herd.DeviceQuery, tenantID int64, seg segment, walkCap int64) (bool, error) {
	from := "devices"
	if db.dialect == SQLite {
		from += " INDEXED BY " + sortIndex(q)
	}
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM `+from+` WHERE tenant_id = ?`+seg.where+` ORDER BY `+seg.order+` LIMIT 1 OFFSET ?`,
		append(append([]any{tenantID}, seg.args...), walkCap)...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("walk cap: %w", err)
	}
	return true, nil
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

// sortIndexed are the fields with a devices_tenant_<field> index (see the
// migrations); a sort on any other field reads the scope and sorts it.
var sortIndexed = map[string]bool{"id": true, "path": true, "name": true, "key": true, "firmware": true,
	"status": true, "last_seen": true, "created_at": true}

// selectiveFields have indexes that find a handful of rows for an equality;
// with a filter on one of them the engine's planner knows best.
var selectiveFields = map[string]bool{"id": true, "key": true, "name": true, "node_id": true, "path": true}

// pageSQL returns the page statement for one keyset segment, steering the
// engine to the access path chosen by QueryDevices.
func (db *DB) pageSQL(q herd.DeviceQuery, small bool, where, order string) string {
	if db.dialect == Postgres {
		if small {
			// MATERIALIZED fences the scope scan from the ORDER BY, so the
			// planner cannot trade it for a walk of the whole tenant in sort
			// order.
			return `WITH s AS MATERIALIZED (SELECT ` + deviceColumns + ` FROM devices WHERE ` + where + `) SELECT * FROM s ORDER BY ` + order + ` LIMIT ?`
		}
		return `SELECT ` + deviceColumns + ` FROM devices WHERE ` + where + ` ORDER BY ` + order + ` LIMIT ?`
	}
	index := "devices_tenant_path"
	if small && statusFilter(q) {
		index = "devices_tenant_status_path"
	} else if !small {
		index = sortIndex(q)
	}
	if selectiveFilter(q) {
		index = ""
	}
	from := "devices"
	if index != "" {
		from += " INDEXED BY " + index
	}
	return `SELECT ` + deviceColumns + ` FROM ` + from + ` WHERE ` + where + ` ORDER BY ` + order + ` LIMIT ?`
}

// statusFilter reports whether the query keeps to a single status.
func statusFilter(q herd.DeviceQuery) bool {
	for _, f := range q.Filters {
		if f.Field == "status" && f.Op == herd.OpEq {
			return true
		}
	}
	return false
}

// sortIndex names the index that yields the query's rows in sort order.
func sortIndex(q herd.DeviceQuery) string {
	return "devices_tenant_" + q.Sort.Field
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
// (the parser refuses anything else), values are always bound.
func whereFilters(b *strings.Builder, filters []herd.DeviceFilter, args []any) []any {
	for _, f := range filters {
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
