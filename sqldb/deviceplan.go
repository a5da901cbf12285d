package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/herd-iot/herd"
)

// The planner of the scoped device query: which access path a page takes,
// and the statements that steer each engine onto it.

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
	// searchDriven says the page's condition starts with the candidates of
	// a search text from the trigram index (see chooseSearchDriver): the
	// engine looks those up by id rather than reading the scope.
	searchDriven bool
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
	} else if labelFilter(q) || searchFilter(q) {
		// A label filter (or a search) is a subquery per row whose
		// selectivity no planner knows; PostgreSQL without statistics took the capped
		// walk's join for a nested loop over the filtered scope, a second
		// for 50,000 devices and minutes for a longer walk. Reading the
		// scope costs a lookup per device, linear and bounded by the
		// scope; large scopes go to the state cache.
		return p, nil
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

// labelFilter reports whether the query filters on a label.
func labelFilter(q herd.DeviceQuery) bool {
	for _, f := range q.Filters {
		if _, ok := herd.LabelKeyOf(f.Field); ok {
			return true
		}
	}
	return false
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

// sortIndexed are the fields with a devices_tenant_<field> index (see the
// migrations); a sort on any other field reads the scope and sorts it.
var sortIndexed = map[string]bool{"id": true, "path": true, "name": true, "key": true, "firmware": true,
	"status": true, "last_seen": true, "created_at": true}

// selectiveFields have indexes that find a handful of rows for an equality;
// with a filter on one of them the engine's planner knows best.
var selectiveFields = map[string]bool{"id": true, "key": true, "name": true, "node_id": true, "path": true}

// pageSQL returns the page statement for one keyset segment, steering the
// engine to the access path chosen by QueryDevices.
func (db *DB) pageSQL(q herd.DeviceQuery, small, searchDriven bool, where, order string) string {
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
	if searchDriven {
		// The candidates, looked up by rowid (which NOT INDEXED leaves),
		// not the scope.
		return `SELECT ` + deviceColumns + ` FROM devices NOT INDEXED WHERE ` + where + ` ORDER BY ` + order + ` LIMIT ?`
	}
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
