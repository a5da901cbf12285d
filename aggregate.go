package herd

import (
	"net/url"
	"slices"
	"strings"
	"time"
)

// Fleet aggregates: one numeric field of the readings of every device in a
// scope, one point per step per aggregation function, from the rollups the
// store keeps per node, minute and hour (see docs/history.md).

// AggregateFuncs are the aggregation functions of a fleet aggregate.
var AggregateFuncs = []string{AggAvg, AggMin, AggMax, AggCount, AggSum, AggP50, AggP95, AggP99}

// AggregateGroups are the group_by values of a fleet aggregate.
var AggregateGroups = []string{"node", "model", "firmware"}

// DefaultAggregateStep is the step of an aggregate that names none.
const DefaultAggregateStep = time.Hour

// QuantileOf returns the quantile an aggregation function names (0.95 for
// p95), and false for the functions that are not quantiles.
func QuantileOf(agg string) (float64, bool) {
	switch agg {
	case AggP50:
		return 0.50, true
	case AggP95:
		return 0.95, true
	case AggP99:
		return 0.99, true
	}
	return 0, false
}

// RollupFilterFields are the device fields whose filters a fleet aggregate
// answers from the rollups: the node (by id or path, as the node is now)
// and the model and firmware the device had when it reported. A filter on
// any other field is a condition on the devices as they are now, which
// the rollups do not keep; the store answers it from the readings of the
// matching devices.
var RollupFilterFields = []string{"node_id", "path", "model", "firmware"}

// RollupServes reports whether the rollups answer every filter of q.
func (q *AggregateQuery) RollupServes() bool {
	for _, f := range q.Filters {
		if !slices.Contains(RollupFilterFields, f.Field) {
			return false
		}
	}
	return true
}

// ParseAggregateQuery parses the query string of GET /v1/readings/aggregate:
// tenant_id, node_id, filter (repeated, the device filter language), field
// (required, a numeric reading field), agg (a comma list, default avg),
// from and to (default the last 24 hours), step (whole minutes, default 1h)
// and group_by. Every error names the part that is wrong.
func ParseAggregateQuery(v url.Values, now time.Time) (AggregateQuery, error) {
	var q AggregateQuery
	if err := checkHistoryParams(v, "tenant_id", "node_id", "filter", "field", "agg", "from", "to", "step", "group_by"); err != nil {
		return q, err
	}
	var err error
	if q.TenantID, q.NodeID, q.Filters, err = parseScopeParams(v); err != nil {
		return q, err
	}
	q.Field = v.Get("field")
	if q.Field == "" {
		return q, Errorf(EINVALID, "field is required: one of %s", strings.Join(NumericReadingFields, ", "))
	} else if !IsNumericReadingField(q.Field) {
		return q, Errorf(EINVALID, "field %q is not a numeric reading field (%s)", q.Field, strings.Join(NumericReadingFields, ", "))
	}
	q.Aggs = []string{AggAvg}
	if s := v.Get("agg"); s != "" {
		q.Aggs = nil
		for _, a := range strings.Split(s, ",") {
			if !slices.Contains(AggregateFuncs, a) {
				return q, Errorf(EINVALID, "agg %q is not one of %s", a, strings.Join(AggregateFuncs, ", "))
			} else if slices.Contains(q.Aggs, a) {
				return q, Errorf(EINVALID, "agg %q is named twice", a)
			}
			q.Aggs = append(q.Aggs, a)
		}
	}
	if q.From, q.To, err = ParseHistoryRange(v.Get("from"), v.Get("to"), now); err != nil {
		return q, err
	}
	if v.Get("from") == "" {
		// The default day starts on a whole hour, so that hourly steps
		// read the hourly rollups (a from at 10:31 would need minutes).
		q.From = q.From.Truncate(time.Hour)
	}
	q.Step = DefaultAggregateStep
	if s := v.Get("step"); s != "" {
		if q.Step, err = ParseStep(s); err != nil {
			return q, err
		}
	}
	q.GroupBy = v.Get("group_by")
	if q.GroupBy != "" && !slices.Contains(AggregateGroups, q.GroupBy) {
		return q, Errorf(EINVALID, "group_by %q is not one of %s", q.GroupBy, strings.Join(AggregateGroups, ", "))
	}
	return q, q.Normalize()
}

// Normalize checks a query built in code as the parser checks one from a
// request, and aligns its range to the rollups' minutes: from rounds down
// and to up to a whole minute (UTC), so that every step is whole buckets.
func (q *AggregateQuery) Normalize() error {
	if !IsNumericReadingField(q.Field) {
		return Errorf(EINVALID, "field %q is not a numeric reading field", q.Field)
	}
	if len(q.Aggs) == 0 {
		q.Aggs = []string{AggAvg}
	}
	for _, a := range q.Aggs {
		if !slices.Contains(AggregateFuncs, a) {
			return Errorf(EINVALID, "agg %q is not one of %s", a, strings.Join(AggregateFuncs, ", "))
		}
	}
	if q.GroupBy != "" && !slices.Contains(AggregateGroups, q.GroupBy) {
		return Errorf(EINVALID, "group_by %q is not one of %s", q.GroupBy, strings.Join(AggregateGroups, ", "))
	}
	if q.Step == 0 {
		q.Step = DefaultAggregateStep
	}
	if q.Step < time.Minute || q.Step%time.Minute != 0 {
		return Errorf(EINVALID, "step %s: fleet aggregates step in whole minutes (their rollups are per minute and per hour)", FormatStep(q.Step))
	}
	// The filters as GET /v1/devices checks them, for a query built in
	// code: only allow-listed fields and operators reach the SQL.
	if err := (&DeviceQuery{Filters: q.Filters}).Normalize(); err != nil {
		return err
	}
	q.From = q.From.Truncate(time.Minute)
	if t := q.To.Truncate(time.Minute); !t.Equal(q.To) {
		q.To = t.Add(time.Minute)
	}
	if !q.From.Before(q.To) {
		return Errorf(EINVALID, "from must come before to")
	}
	return CheckSteps(q.From, q.To, q.Step)
}

// Values encodes q as the query string ParseAggregateQuery reads; a filter
// value no parse gives (see FormatDeviceFilter) is an error.
func (q AggregateQuery) Values() (url.Values, error) {
	v, err := scopeValues(q.TenantID, q.NodeID, q.Filters)
	if err != nil {
		return nil, err
	}
	v.Set("field", q.Field)
	if len(q.Aggs) > 0 {
		v.Set("agg", strings.Join(q.Aggs, ","))
	}
	if !q.From.IsZero() {
		v.Set("from", q.From.Format(time.RFC3339Nano))
	}
	if !q.To.IsZero() {
		v.Set("to", q.To.Format(time.RFC3339Nano))
	}
	if q.Step != 0 {
		v.Set("step", FormatStep(q.Step))
	}
	if q.GroupBy != "" {
		v.Set("group_by", q.GroupBy)
	}
	return v, nil
}
