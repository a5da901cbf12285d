package sqldb

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/herd-iot/herd"
)

// MaxAggregateReadings bounds the readings a fleet aggregate reads when the
// rollups cannot answer its filters (a filter on the devices as they are
// now): past it the request is refused, naming the way out, instead of
// reading the history of a whole fleet.
const MaxAggregateReadings = 2_000_000

// Bounds of one aggregate's answer: its groups (a model or firmware is
// free text, so group_by can have as many as there are devices) and its
// cells, a group's step, each with a sketch when quantiles are asked for.
const (
	MaxAggregateGroups = 1000
	MaxAggregateCells  = 200_000
)

// AggregateReadings aggregates a field over a scope. With filters on the
// node, model and firmware only (herd.RollupFilterFields), it reads the
// rollups: hourly ones when the step is whole hours from a whole hour,
// minute ones otherwise. Any other filter reads the readings of the
// matching devices (AggregateFromReadings), up to MaxAggregateReadings.
func (s *HistoryService) AggregateReadings(ctx context.Context, q herd.AggregateQuery) (_ *herd.AggregateResult, err error) {
	defer wrapOp("sqldb.AggregateReadings", &err)
	if err := q.Normalize(); err != nil {
		return nil, err
	}
	if !q.RollupServes() {
		return s.AggregateFromReadings(ctx, q)
	}
	a, err := actor(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := s.db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	scope, err := tx.historyScope(ctx, a, q.TenantID, q.NodeID)
	if err != nil {
		return nil, err
	}
	// Whole hours from a whole hour read the hourly rollups, up to the last
	// whole hour before to; what is left (or all of it, for other steps)
	// reads the minutes.
	type segment struct{ res, from, to int64 }
	from, to := q.From.UnixMilli(), q.To.UnixMilli()
	segs, source := []segment{{RollupMinute, from, to}}, "rollup_1m"
	if q.Step%time.Hour == 0 && from%RollupHour == 0 {
		hourEnd := floorDiv(to, RollupHour) * RollupHour
		segs, source = []segment{{RollupHour, from, hourEnd}}, "rollup_1h"
		if hourEnd < to {
			segs = append(segs, segment{RollupMinute, hourEnd, to})
		}
	}
	// Minute rollups go with the readings: past their retention only whole
	// hours from a whole hour can be answered, and a range that needs
	// minutes there is refused rather than answered with what is left.
	retention := s.db.ReadingsRetention
	if retention == 0 {
		retention = DefaultReadingsRetention
	}
	if cut := s.db.Now().Add(-retention).UnixMilli(); slices.ContainsFunc(segs, func(g segment) bool { return g.res == RollupMinute && g.from < cut }) {
		return nil, herd.Errorf(herd.EINVALID, "minute rollups are kept for %s (the readings retention) and this range starts before that: use a step of whole hours and a from on a whole hour (UTC)", herd.FormatStep(retention))
	}
	agg := newAggregator(q, scope)
	out := agg.result(source)
	if scope.Empty() {
		return out, nil
	}
	for _, seg := range segs {
		if err := readRollups(ctx, tx, q, scope, agg, seg.res, seg.from, seg.to); err != nil {
			return nil, err
		}
	}
	if err := agg.finish(ctx, tx, out); err != nil {
		return nil, err
	}
	return out, nil
}

// readRollups folds the rollups of resolution res with buckets in
// [from, to) into agg.
func readRollups(ctx context.Context, tx *Tx, q herd.AggregateQuery, scope herd.Scope, agg *aggregator, res, from, to int64) error {
	// The rollups of the tenant's range, each with its node's path now:
	// the scope and the filters on the node are conditions on that path.
	// On PostgreSQL the path is a lookup of the node by its key per row
	// (a scalar subquery, which the planner keeps as one): without
	// statistics it joined nodes as a nested loop over every node for
	// every rollup, 150 ms for 4,800 rows of 200 sites. It reads the
	// tenant's rollups of the range and keeps the scope's, so a small
	// scope of a tenant of many sites reads more rows than its own.
	pathExpr := "n.path"
	fromSQL := "reading_rollups r JOIN nodes n ON n.id = r.node_id AND n.tenant_id = r.tenant_id"
	if tx.db.dialect == Postgres {
		pathExpr = "(SELECT n.path FROM nodes n WHERE n.id = r.node_id AND n.tenant_id = r.tenant_id)"
		fromSQL = "reading_rollups r"
	}
	var where strings.Builder
	args := []any{scope.TenantID, res, from, to}
	where.WriteString(`r.tenant_id = ? AND r.res = ? AND r.bucket >= ? AND r.bucket < ?`)
	var paths strings.Builder
	var pathArgs []any
	paths.WriteString(" AND (")
	for i, p := range scope.Paths {
		if i > 0 {
			paths.WriteString(" OR ")
		}
		paths.WriteString("(x.path >= ? AND x.path < ?)")
		pathArgs = append(pathArgs, p, herd.PathUpperBound(p))
	}
	paths.WriteString(")")
	var nodeFilters strings.Builder
	for _, f := range q.Filters {
		if f.Field == "path" {
			pathArgs = whereFilter(&nodeFilters, "x.path", f, pathArgs)
			continue
		}
		col := map[string]string{"node_id": "r.node_id", "model": "r.model", "firmware": "r.firmware"}[f.Field]
		args = whereFilter(&where, col, f, args)
	}
	field := slices.Index(herd.NumericReadingFields, q.Field)
	rows, err := tx.QueryContext(ctx, `SELECT x.bucket, x.path, x.model, x.firmware, x.stats FROM (
		SELECT r.bucket, `+pathExpr+` AS path, r.model, r.firmware, r.stats FROM `+fromSQL+` WHERE `+where.String()+`) x
		WHERE x.path IS NOT NULL`+paths.String()+nodeFilters.String(), append(args, pathArgs...)...)
	if err != nil {
		return fmt.Errorf("read rollups: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var bucket int64
		var path, model, firmware string
		var stats []byte
		if err := rows.Scan(&bucket, &path, &model, &firmware, &stats); err != nil {
			return fmt.Errorf("read rollups: %w", err)
		}
		// A row without this field adds nothing. A PostgreSQL row holds a
		// section of the field for each batch since it was last compacted
		// (rollup.go): each merges into the cell, as the compaction would.
		err := eachField(stats, func(i int, n int64, sum, lo, hi float64, sk []byte) error {
			if i != field {
				return nil
			}
			return agg.cell(agg.group(path, model, firmware), bucket).merge(n, sum, lo, hi, sk)
		})
		if err != nil {
			return err
		} else if agg.err != nil {
			return agg.err
		}
	}
	if err := rows.Close(); err != nil {
		return err
	}
	return rows.Err()
}

// AggregateFromReadings answers an aggregate from the readings themselves:
// every reading in the range of every device now in the scope and matching
// the filters, with exact quantiles. It serves the filters the rollups do
// not keep, and is the baseline the rollups are checked and measured
// against. Devices are attributed as they are now (node, model, firmware),
// unlike the rollups, which keep them as they were when they reported.
func (s *HistoryService) AggregateFromReadings(ctx context.Context, q herd.AggregateQuery) (_ *herd.AggregateResult, err error) {
	defer wrapOp("sqldb.AggregateFromReadings", &err)
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
	scope, err := tx.historyScope(ctx, a, q.TenantID, q.NodeID)
	if err != nil {
		return nil, err
	}
	agg := newAggregator(q, scope)
	agg.exact = true
	out := agg.result("readings")
	if scope.Empty() {
		return out, nil
	}
	var devices strings.Builder
	dargs := whereScope(&devices, scope)
	dargs = whereFilters(&devices, q.Filters, dargs)
	// The field is one of herd.NumericReadingFields, a column name.
	args := append([]any{scope.TenantID, q.From.UnixMilli(), q.To.UnixMilli()}, dargs...)
	limit := s.RawLimit
	if limit == 0 {
		limit = MaxAggregateReadings
	}
	args = append(args, limit+1)
	rows, err := tx.QueryContext(ctx, `SELECT r.ts, r.`+q.Field+`, d.path, d.model, d.firmware
		FROM readings r JOIN devices d ON d.id = r.device_id AND d.tenant_id = r.tenant_id
		WHERE r.tenant_id = ? AND r.ts >= ? AND r.ts < ? AND r.`+q.Field+` IS NOT NULL
		AND r.device_id IN (SELECT id FROM devices WHERE `+devices.String()+`) LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("read readings: %w", err)
	}
	defer rows.Close()
	seen := int64(0)
	for rows.Next() {
		var ts int64
		var v float64
		var path, model, firmware string
		if err := rows.Scan(&ts, &v, &path, &model, &firmware); err != nil {
			return nil, fmt.Errorf("read readings: %w", err)
		}
		if seen++; seen > limit {
			return nil, herd.Errorf(herd.EINVALID, "this aggregate would read more than %d readings: a filter on other fields than %s is answered from the readings of the matching devices; narrow the range, the node or the filter",
				limit, strings.Join(herd.RollupFilterFields, ", "))
		}
		c := agg.cell(agg.group(path, model, firmware), floorDiv(ts, RollupMinute)*RollupMinute)
		if agg.err != nil {
			return nil, agg.err
		}
		c.values = append(c.values, v)
		c.add(v)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	} else if err := rows.Err(); err != nil {
		return nil, err
	}
	if err := agg.finish(ctx, tx, out); err != nil {
		return nil, err
	}
	return out, nil
}

// whereFilter appends one filter on the column col, values bound.
func whereFilter(b *strings.Builder, col string, f herd.DeviceFilter, args []any) []any {
	b.WriteString(" AND ")
	switch f.Op {
	case herd.OpIn:
		b.WriteString(col + " IN (" + strings.TrimSuffix(strings.Repeat("?,", len(f.Values)), ",") + ")")
		return append(args, f.Values...)
	case herd.OpPrefix:
		prefix := f.Values[0].(string)
		if upper, ok := herd.PrefixUpperBound(prefix); ok {
			b.WriteString("(" + col + " >= ? AND " + col + " < ?)")
			return append(args, prefix, upper)
		}
		b.WriteString(col + " >= ?")
		return append(args, prefix)
	}
	b.WriteString(col + " " + sqlOps[f.Op] + " ?")
	return append(args, f.Values[0])
}

// aggregator folds rollup rows or readings into one cell per group and
// step.
type aggregator struct {
	q         herd.AggregateQuery
	scope     herd.Scope
	root      string // the scope's root, for group_by=node
	quantiles bool
	exact     bool // cells keep their values (readings), not a sketch
	from      int64
	step      int64
	cells     map[string]map[int64]*aggCell // group → step start → cell
	ncells    int
	err       error // past MaxAggregateGroups or MaxAggregateCells
}

type aggCell struct {
	fieldStats
	values []float64 // exact: the readings' values
}

func newAggregator(q herd.AggregateQuery, scope herd.Scope) *aggregator {
	agg := &aggregator{q: q, scope: scope, root: herd.ScopeRoot(scope.Paths), from: q.From.UnixMilli(), step: q.Step.Milliseconds(), cells: map[string]map[int64]*aggCell{}}
	for _, a := range q.Aggs {
		if _, ok := herd.QuantileOf(a); ok {
			agg.quantiles = true
		}
	}
	return agg
}

func (agg *aggregator) result(source string) *herd.AggregateResult {
	return &herd.AggregateResult{Field: agg.q.Field, From: agg.q.From.UTC(), To: agg.q.To.UTC(), Step: herd.FormatStep(agg.q.Step), Source: source, Series: []herd.AggregateSeries{}}
}

// group is the group key of a row.
func (agg *aggregator) group(path, model, firmware string) string {
	switch agg.q.GroupBy {
	case "node":
		id, _ := herd.GroupNodeID(agg.root, path)
		return strconv.FormatInt(id, 10)
	case "model":
		return model
	case "firmware":
		return firmware
	}
	return ""
}

// cell returns the cell of a group and of the step holding bucket.
func (agg *aggregator) cell(group string, bucket int64) *aggCell {
	byStep := agg.cells[group]
	if byStep == nil && len(agg.cells) == MaxAggregateGroups {
		agg.err = herd.Errorf(herd.EINVALID, "group_by=%s gives more than %d groups: narrow the scope or the filter", agg.q.GroupBy, MaxAggregateGroups)
		return &aggCell{}
	}
	if byStep == nil {
		byStep = map[int64]*aggCell{}
		agg.cells[group] = byStep
	}
	start := agg.from + floorDiv(bucket-agg.from, agg.step)*agg.step
	c := byStep[start]
	if c == nil && agg.ncells == MaxAggregateCells {
		agg.err = herd.Errorf(herd.EINVALID, "this aggregate has more than %d groups × steps: choose a larger step, a shorter range or fewer groups", MaxAggregateCells)
		return &aggCell{}
	}
	if c == nil {
		agg.ncells++
		c = &aggCell{}
		if agg.quantiles && !agg.exact {
			c.sketch = newSketch()
		}
		byStep[start] = c
	}
	return c
}

// finish turns the cells into series: per group (in key order), per agg
// (in the order asked), the steps with readings in time order.
func (agg *aggregator) finish(ctx context.Context, tx *Tx, out *herd.AggregateResult) error {
	if agg.err != nil {
		return agg.err
	}
	names := map[string]string{}
	if agg.q.GroupBy == "node" && len(agg.cells) > 0 {
		var err error
		if names, err = tx.coveredNodeNames(ctx, agg.scope, slices.Collect(maps.Keys(agg.cells))); err != nil {
			return err
		}
	}
	groups := slices.Sorted(maps.Keys(agg.cells))
	for _, g := range groups {
		byStep := agg.cells[g]
		starts := slices.Sorted(maps.Keys(byStep))
		for _, a := range agg.q.Aggs {
			ser := herd.AggregateSeries{Group: g, GroupName: names[g], Agg: a, Points: make([]herd.Point, 0, len(starts))}
			for _, start := range starts {
				c := byStep[start]
				if c.n == 0 {
					continue
				}
				v, err := c.value(a)
				if err != nil {
					return err
				}
				ser.Points = append(ser.Points, herd.Point{TS: start, Value: v})
			}
			out.Series = append(out.Series, ser)
		}
	}
	return nil
}

// value computes one aggregation function of a cell.
func (c *aggCell) value(agg string) (float64, error) {
	switch agg {
	case herd.AggAvg:
		return c.sum / float64(c.n), nil
	case herd.AggMin:
		return c.min, nil
	case herd.AggMax:
		return c.max, nil
	case herd.AggCount:
		return float64(c.n), nil
	case herd.AggSum:
		return c.sum, nil
	}
	q, _ := herd.QuantileOf(agg)
	if c.values != nil {
		return ExactQuantile(c.values, q), nil
	}
	v, err := c.sketch.GetValueAtQuantile(q)
	if err != nil {
		return 0, fmt.Errorf("quantile of a rollup: %w", err)
	}
	// The sketch's answer lies within its accuracy of a value in the
	// cell; the exact min and max bound every value.
	return min(max(v, c.min), c.max), nil
}

// ExactQuantile is the quantile of values from the readings themselves:
// the value of rank q·(n−1) in sorted order, the lower of the two when the
// rank falls between (the sketch's answer is within its accuracy of a
// value between those two). It sorts values.
func ExactQuantile(values []float64, q float64) float64 {
	slices.Sort(values)
	return values[int(math.Floor(q*float64(len(values)-1)))]
}
