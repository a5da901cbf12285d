package herd

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Telemetry history: what herd keeps of the readings it acknowledged and the
// reads over it. Four reads, each scoped as the device query is (by the
// caller's grants as node paths, never by a list of device ids):
//
//   - one device's readings, raw with keyset paging or one point per step
//     (ReadingsQuery);
//   - fleet aggregates over a scope, answered from rollups per node, minute
//     and hour (AggregateQuery);
//   - the latest-state summary of a scope, from the projection
//     (SummaryQuery);
//   - the export of a scope's readings over a range (ExportQuery).
//
// See docs/history.md.

// NumericReadingFields are the typed numeric fields of a reading, by their
// API (and SQL) names: what a step, an aggregate or a summary computes over.
// status and firmware are text, returned with raw readings only.
var NumericReadingFields = []string{
	"temperature", "humidity", "pressure", "voltage", "current", "power",
	"battery", "rssi", "uptime_s", "error_count",
}

// IsNumericReadingField reports whether name is one of NumericReadingFields.
func IsNumericReadingField(name string) bool {
	for _, f := range NumericReadingFields {
		if f == name {
			return true
		}
	}
	return false
}

// ExtraFieldPrefix names a number among a reading's extras in fields=:
// "extra.some_key".
const ExtraFieldPrefix = "extra."

// Aggregation functions. A device's steps take avg, min, max, last, count
// and sum; fleet aggregates take avg, min, max, count, sum and the
// quantiles.
const (
	AggAvg   = "avg"
	AggMin   = "min"
	AggMax   = "max"
	AggLast  = "last"
	AggCount = "count"
	AggSum   = "sum"
	AggP50   = "p50"
	AggP95   = "p95"
	AggP99   = "p99"
)

// History limits.
const (
	// DefaultReadingsLimit and MaxReadingsLimit bound a page of raw readings.
	DefaultReadingsLimit = 1000
	MaxReadingsLimit     = 10000
	// MaxSeriesPoints bounds the steps of one stepped request: a range
	// divided by its step may give at most this many points per series.
	MaxSeriesPoints = 10000
	// DefaultHistoryRange is the range of a request that gives no from.
	DefaultHistoryRange = 24 * time.Hour
)

// Point is one step of a series: the step's start and its value. It is
// written as the pair [unix_ms, value], as charting libraries take it; a
// value past float64's range (a sum of readings near 1e308) is written as
// null and read back as NaN.
type Point struct {
	TS    int64 // the step's start, unix milliseconds
	Value float64
}

// MarshalJSON writes [ts, value].
func (p Point) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 32)
	b = append(b, '[')
	b = strconv.AppendInt(b, p.TS, 10)
	b = append(b, ',')
	if math.IsNaN(p.Value) || math.IsInf(p.Value, 0) {
		return append(b, "null]"...), nil
	}
	v, err := json.Marshal(p.Value)
	if err != nil {
		return nil, err
	}
	b = append(b, v...)
	return append(b, ']'), nil
}

// UnmarshalJSON reads [ts, value].
func (p *Point) UnmarshalJSON(b []byte) error {
	var pair [2]*json.Number
	if err := json.Unmarshal(b, &pair); err != nil {
		return err
	}
	if pair[0] == nil {
		return errors.New("point: no time")
	}
	ts, err := pair[0].Int64()
	if err != nil {
		return err
	}
	v := math.NaN()
	if pair[1] != nil {
		if v, err = pair[1].Float64(); err != nil {
			return err
		}
	}
	p.TS, p.Value = ts, v
	return nil
}

// ParseHistoryTime parses a from= or to= value: RFC 3339 (with any offset,
// so a local midnight such as 2026-12-01T00:00:00+05:30 is a step origin) or
// unix milliseconds.
//
// Times before 1970 or past the year 9999 are refused: no reading is
// stamped there (they start in 2000), and step arithmetic in milliseconds
// and RFC 3339 answers stay within range inside those bounds.
func ParseHistoryTime(name, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if ms, perr := strconv.ParseInt(s, 10, 64); perr == nil {
		t, err = time.UnixMilli(ms), nil
	}
	if err != nil {
		return time.Time{}, Errorf(EINVALID, "%s %q is neither an RFC 3339 time (such as 2026-12-01T00:00:00Z) nor unix milliseconds", name, s)
	}
	if t.Before(time.Unix(0, 0)) || !t.Before(maxHistoryTime) {
		return time.Time{}, Errorf(EINVALID, "%s %q is outside 1970 to 9999", name, s)
	}
	return t, nil
}

// maxHistoryTime is the first instant past the year 9999.
var maxHistoryTime = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)

// ParseHistoryRange reads from= and to= of a history request: to defaults to
// now, from to DefaultHistoryRange before to. The range is [from, to); from
// must come before to.
func ParseHistoryRange(from, to string, now time.Time) (f, t time.Time, err error) {
	t = now
	if to != "" {
		if t, err = ParseHistoryTime("to", to); err != nil {
			return f, t, err
		}
	}
	f = t.Add(-DefaultHistoryRange)
	if from != "" {
		if f, err = ParseHistoryTime("from", from); err != nil {
			return f, t, err
		}
	}
	if !f.Before(t) {
		return f, t, Errorf(EINVALID, "from (%s) must come before to (%s)", f.Format(time.RFC3339Nano), t.Format(time.RFC3339Nano))
	}
	return f, t, nil
}

// ParseStep parses step=: a whole number of seconds (s), minutes (m), hours
// (h), days (d) or weeks (w), such as 30s, 5m, 1h, 1d; a day is 24 hours
// (steps start at from, so a from at local midnight gives local days, apart
// from the days a clock change makes 23 or 25 hours long).
func ParseStep(s string) (time.Duration, error) {
	if len(s) < 2 {
		return 0, Errorf(EINVALID, "step %q is not a duration such as 1m, 5m, 1h or 1d", s)
	}
	unit := map[byte]time.Duration{'s': time.Second, 'm': time.Minute, 'h': time.Hour, 'd': 24 * time.Hour, 'w': 7 * 24 * time.Hour}[s[len(s)-1]]
	n, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
	if unit == 0 || err != nil || n <= 0 || n > 3660 || strings.HasPrefix(s, "+") {
		return 0, Errorf(EINVALID, "step %q is not a duration such as 1m, 5m, 1h or 1d", s)
	}
	return time.Duration(n) * unit, nil
}

// FormatStep writes a step as ParseStep reads it, in its largest whole unit.
func FormatStep(d time.Duration) string {
	for _, u := range []struct {
		d time.Duration
		s string
	}{{7 * 24 * time.Hour, "w"}, {24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if d >= u.d && d%u.d == 0 {
			return strconv.FormatInt(int64(d/u.d), 10) + u.s
		}
	}
	return d.String()
}

// CheckSteps refuses a range that would give more than MaxSeriesPoints steps.
func CheckSteps(from, to time.Time, step time.Duration) error {
	// In milliseconds: a Duration cannot span more than 292 years, and a
	// from far in the past would saturate it.
	span, ms := to.UnixMilli()-from.UnixMilli(), step.Milliseconds()
	if n := (span + ms - 1) / ms; n > MaxSeriesPoints {
		return Errorf(EINVALID, "step %s over this range gives %d points, more than the limit of %d: choose a larger step or a shorter range", FormatStep(step), n, MaxSeriesPoints)
	}
	return nil
}

// checkHistoryParams refuses a query parameter not among names, and any
// but filter given more than once: the history's reads share the device
// query's strictness, so a misspelt or doubled parameter never quietly
// widens or changes an answer.
func checkHistoryParams(v url.Values, names ...string) error {
	for key, vals := range v {
		if !slices.Contains(names, key) {
			return Errorf(EINVALID, "unknown query parameter %q (%s)", key, strings.Join(names, " "))
		}
		if key != "filter" && len(vals) > 1 {
			return Errorf(EINVALID, "%s is given %d times: give query parameter %q once", key, len(vals), key)
		}
	}
	return nil
}

// parseScopeParams reads the scope of a read over many devices: tenant_id
// (a super-admin's tenant), node_id (a subtree) and filter (repeated, the
// device filter language of GET /v1/devices within its limits).
func parseScopeParams(v url.Values) (tenantID, nodeID int64, filters []DeviceFilter, err error) {
	if tenantID, err = parseOptionalID(v, "tenant_id"); err != nil {
		return 0, 0, nil, err
	}
	if nodeID, err = parseOptionalID(v, "node_id"); err != nil {
		return 0, 0, nil, err
	}
	filters, err = ParseDeviceFilters(v["filter"])
	return tenantID, nodeID, filters, err
}

// ParseDeviceFilters parses repeated filter= values as GET /v1/devices does,
// within the same limits.
func ParseDeviceFilters(fs []string) ([]DeviceFilter, error) {
	if len(fs) > MaxFilters {
		return nil, Errorf(EINVALIDFILTER, "at most %d filters", MaxFilters)
	}
	var out []DeviceFilter
	nvalues := 0
	for _, s := range fs {
		f, err := ParseDeviceFilter(s)
		if err != nil {
			return nil, err
		}
		if nvalues += len(f.Values); nvalues > MaxFilterValues {
			return nil, Errorf(EINVALIDFILTER, "filter %q: at most %d filter values in one query", s, MaxFilterValues)
		}
		out = append(out, f)
	}
	return out, nil
}

// scopeValues writes what parseScopeParams reads; a filter value no parse
// gives (see FormatDeviceFilter) is an error.
func scopeValues(tenantID, nodeID int64, filters []DeviceFilter) (url.Values, error) {
	v := url.Values{}
	if tenantID != 0 {
		v.Set("tenant_id", strconv.FormatInt(tenantID, 10))
	}
	if nodeID != 0 {
		v.Set("node_id", strconv.FormatInt(nodeID, 10))
	}
	for _, f := range filters {
		s, err := FormatDeviceFilter(f)
		if err != nil {
			return nil, err
		}
		v.Add("filter", s)
	}
	return v, nil
}

// parseOptionalID reads an optional id parameter.
func parseOptionalID(v url.Values, name string) (int64, error) {
	s := v.Get(name)
	if s == "" {
		return 0, nil
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, Errorf(EINVALID, "%s %q is not an id", name, s)
	}
	return id, nil
}

// ScopeRoot is the node path a scope's groups hang under for group_by=node:
// the longest common path of the covering paths, cut back to a whole node
// ("/1/5/9/" alone gives itself; "/1/5/" and "/1/7/" give "/1/").
func ScopeRoot(paths []string) string {
	if len(paths) == 0 {
		return ""
	}
	root := paths[0]
	for _, p := range paths[1:] {
		n := 0
		for n < len(root) && n < len(p) && root[n] == p[n] {
			n++
		}
		root = root[:n]
	}
	if i := strings.LastIndexByte(root, '/'); i >= 0 {
		return root[:i+1]
	}
	return ""
}

// GroupNodeID is the node a device (or a rollup of its node) at path falls
// into for group_by=node under root: the child of root that path is under,
// or root's own node when path is root itself. ok is false when path is not
// under root.
func GroupNodeID(root, path string) (id int64, ok bool) {
	if !strings.HasPrefix(path, root) {
		return 0, false
	}
	rest := path[len(root):]
	if rest == "" {
		// The root's own node: the last element of root.
		seg := strings.TrimSuffix(root, "/")
		rest = seg[strings.LastIndexByte(seg, '/')+1:] + "/"
	}
	i := strings.IndexByte(rest, '/')
	if i <= 0 {
		return 0, false
	}
	id, err := strconv.ParseInt(rest[:i], 10, 64)
	return id, err == nil
}

// HistoryReading is one stored reading as a history read returns it: the
// fields the device sent (of those asked for), and its extras.
type HistoryReading struct {
	TS          time.Time       `json:"ts"`
	ReceivedAt  time.Time       `json:"received_at"`
	Temperature *float64        `json:"temperature,omitempty"`
	Humidity    *float64        `json:"humidity,omitempty"`
	Pressure    *float64        `json:"pressure,omitempty"`
	Voltage     *float64        `json:"voltage,omitempty"`
	Current     *float64        `json:"current,omitempty"`
	Power       *float64        `json:"power,omitempty"`
	Battery     *float64        `json:"battery,omitempty"`
	RSSI        *int64          `json:"rssi,omitempty"`
	UptimeS     *int64          `json:"uptime_s,omitempty"`
	ErrorCount  *int64          `json:"error_count,omitempty"`
	Status      *string         `json:"status,omitempty"`
	Firmware    *string         `json:"firmware,omitempty"`
	Extra       json.RawMessage `json:"extra,omitempty"`
}

// ReadingsQuery asks for one device's readings in [From, To): raw, a page
// at a time after Cursor, or with Step and Agg one point per step per field.
type ReadingsQuery struct {
	DeviceID int64
	From, To time.Time
	// Fields are API names of reading fields, or ExtraFieldPrefix+key for a
	// number among the extras; empty means every field (raw) or every
	// numeric field the device sent (stepped).
	Fields []string
	Limit  int
	Cursor string
	Step   time.Duration // zero: raw readings
	Agg    string
}

// ReadingsPage is one page of raw readings, oldest first.
type ReadingsPage struct {
	Items      []*HistoryReading `json:"items"`
	NextCursor string            `json:"next_cursor"`
}

// Series is one field's points, oldest first; steps with no reading are
// left out.
type Series struct {
	Field  string  `json:"field"`
	Points []Point `json:"points"`
}

// SeriesResult is the answer to a stepped ReadingsQuery.
type SeriesResult struct {
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
	Step   string    `json:"step"`
	Agg    string    `json:"agg"`
	Series []Series  `json:"series"`
}

// AggregateQuery asks for one field of the readings of every device in the
// caller's scope (narrowed to NodeID's subtree and the Filters) in
// [From, To), one point per Step per Agg, optionally per group.
type AggregateQuery struct {
	TenantID int64
	NodeID   int64 // zero: the caller's whole scope
	Filters  []DeviceFilter
	Field    string
	Aggs     []string
	From, To time.Time
	Step     time.Duration
	GroupBy  string // "", "node", "model" or "firmware"
}

// AggregateSeries is one aggregate of one group, a point per step with
// readings.
type AggregateSeries struct {
	Group     string  `json:"group,omitempty"`
	GroupName string  `json:"group_name,omitempty"`
	Agg       string  `json:"agg"`
	Points    []Point `json:"points"`
}

// AggregateResult is the answer to an AggregateQuery. Source says what it
// was computed from: "rollup_1h", "rollup_1m" or "readings".
type AggregateResult struct {
	Field  string            `json:"field"`
	From   time.Time         `json:"from"`
	To     time.Time         `json:"to"`
	Step   string            `json:"step"`
	Source string            `json:"source"`
	Series []AggregateSeries `json:"series"`
}

// SummaryQuery asks for the latest state of the devices in the caller's
// scope (narrowed to NodeID's subtree and the Filters): per group, the count
// and the min, avg and max of Fields.
type SummaryQuery struct {
	TenantID int64
	NodeID   int64
	Filters  []DeviceFilter
	GroupBy  string // "", "status", "model", "firmware", "online" or "node"
	Fields   []string
}

// FieldSummary is one field over a group: Count devices have a value.
type FieldSummary struct {
	Count int64    `json:"count"`
	Min   *float64 `json:"min"`
	Avg   *float64 `json:"avg"`
	Max   *float64 `json:"max"`
}

// SummaryGroup is one group of a summary. Name is the node's name for
// group_by=node, left empty for a node the caller's grants do not cover (an
// ancestor of several grants, whose name they may not read). Fields has
// every field asked for, with a zero Count and null figures when no device
// of the group has a value.
type SummaryGroup struct {
	Key    string                  `json:"key"`
	Name   string                  `json:"name,omitempty"`
	Count  int64                   `json:"count"`
	Fields map[string]FieldSummary `json:"fields,omitempty"`
}

// Summary is the answer to a SummaryQuery. Without GroupBy it has exactly
// one group, keyed "", over the whole scope (there even when the scope is
// empty); with GroupBy, one group per key that has a device, ordered by key
// (node ids numerically), at most MaxSummaryGroups of them: the largest,
// with GroupsTruncated set. Count is the whole scope's, truncated or not.
// Source says what answered: "state_cache", "devices" (the table), or
// "none" when the caller's scope is empty.
type Summary struct {
	Count           int64          `json:"count"`
	GroupBy         string         `json:"group_by"`
	Groups          []SummaryGroup `json:"groups"`
	GroupsTruncated bool           `json:"groups_truncated,omitempty"`
	Source          string         `json:"source"`
}

// ExportQuery asks for the readings of every device in the caller's scope
// (narrowed to NodeID's subtree and the Filters) in [From, To), in time
// order.
type ExportQuery struct {
	TenantID int64
	NodeID   int64
	Filters  []DeviceFilter
	From, To time.Time
}

// ExportReading is one reading of an export, with its device.
type ExportReading struct {
	DeviceID int64  `json:"device_id,string"`
	Key      string `json:"key"`
	HistoryReading
}

// HistoryService reads the telemetry history. Every read is scoped by the
// caller's grants: a device outside them is ENOTFOUND, and never counts in
// an aggregate, a summary or an export.
type HistoryService interface {
	// DeviceReadings returns a page of one device's raw readings.
	DeviceReadings(ctx context.Context, q ReadingsQuery) (*ReadingsPage, error)
	// DeviceSeries returns one device's readings one point per step.
	DeviceSeries(ctx context.Context, q ReadingsQuery) (*SeriesResult, error)
	// AggregateReadings aggregates a field over a scope from the rollups.
	AggregateReadings(ctx context.Context, q AggregateQuery) (*AggregateResult, error)
	// SummarizeDevices summarises the latest state of a scope. Returns
	// EINVALID for a query Normalize refuses and ENOTFOUND for a node
	// outside the caller's grants.
	SummarizeDevices(ctx context.Context, q SummaryQuery) (*Summary, error)
	// ExportReadings calls each for every reading of the scope in the
	// range, oldest first, until it returns an error.
	ExportReadings(ctx context.Context, q ExportQuery, each func(*ExportReading) error) error
}
