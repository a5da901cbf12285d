package herd

import (
	"net/url"
	"slices"
	"strings"
)

// The latest-state summary (GET /v1/devices/summary): per group, the count
// of the devices in a scope and the min, avg and max of numeric fields of
// their projection, the figures of a dashboard's overview cards.

// Groupings of a summary.
const (
	SummaryByStatus   = "status"   // key: ok, warn, alarm, or "" for none reported yet
	SummaryByModel    = "model"    // key: the model as registered
	SummaryByFirmware = "firmware" // key: the firmware the device last reported
	SummaryByOnline   = "online"   // key: "true" or "false"
	SummaryByNode     = "node"     // key: the id of the child of the scope's root the device is under
)

// SummaryGroupBys lists the groupings group_by= takes; empty is one group
// over the whole scope.
var SummaryGroupBys = []string{SummaryByStatus, SummaryByModel, SummaryByFirmware, SummaryByOnline, SummaryByNode}

// MaxSummaryGroups bounds the groups of one answer. Status and online have
// at most four and two, the nodes under a scope's root and the models and
// firmware of a fleet are few; a free-text model given per device is not,
// and its answer keeps the largest groups and says it was cut.
const MaxSummaryGroups = 1000

// ParseSummaryQuery parses the query string of GET /v1/devices/summary:
// tenant_id (a super-admin's tenant), node_id (a subtree of the caller's
// scope), filter (repeated, as GET /v1/devices takes it), group_by (one of
// SummaryGroupBys, or none) and fields (a comma list of
// NumericReadingFields, each once). Every error names the part that is
// wrong.
func ParseSummaryQuery(v url.Values) (SummaryQuery, error) {
	var q SummaryQuery
	if err := checkHistoryParams(v, "filter", "tenant_id", "node_id", "group_by", "fields"); err != nil {
		return q, err
	}
	var err error
	if q.TenantID, q.NodeID, q.Filters, err = parseScopeParams(v); err != nil {
		return q, err
	}
	q.GroupBy = v.Get("group_by")
	if s := v.Get("fields"); s != "" {
		q.Fields = strings.Split(s, ",")
	}
	if err := q.checkGroupFields(); err != nil {
		return q, err
	}
	return q, nil
}

// checkGroupFields checks group_by and fields against their allow-lists.
func (q *SummaryQuery) checkGroupFields() error {
	if q.GroupBy != "" && !slices.Contains(SummaryGroupBys, q.GroupBy) {
		return Errorf(EINVALID, "group_by %q is not one of %s", q.GroupBy, strings.Join(SummaryGroupBys, " "))
	}
	for i, f := range q.Fields {
		if !IsNumericReadingField(f) {
			if _, ok := DeviceFields[f]; ok {
				return Errorf(EINVALID, "fields: %q is not a numeric field (%s)", f, strings.Join(NumericReadingFields, " "))
			}
			return Errorf(EINVALID, "fields: unknown field %q (%s)", f, strings.Join(NumericReadingFields, " "))
		}
		if slices.Contains(q.Fields[:i], f) {
			return Errorf(EINVALID, "fields: %q is given twice", f)
		}
	}
	return nil
}

// Normalize checks a query built in code as ParseSummaryQuery checks one
// it parsed, so that a store can trust every name it puts into SQL.
func (q *SummaryQuery) Normalize() error {
	if q.TenantID < 0 || q.NodeID < 0 {
		return Errorf(EINVALID, "tenant_id and node_id must be ids")
	}
	if err := q.checkGroupFields(); err != nil {
		return err
	}
	dq := DeviceQuery{Filters: q.Filters}
	return dq.Normalize()
}

// Values writes the query as ParseSummaryQuery reads it, for the client.
// It fails only for a query no parse gives: a value of the wrong type for
// its field, or an in-list text value holding the separator '|'.
func (q SummaryQuery) Values() (url.Values, error) {
	v, err := scopeValues(q.TenantID, q.NodeID, q.Filters)
	if err != nil {
		return nil, err
	}
	if q.GroupBy != "" {
		v.Set("group_by", q.GroupBy)
	}
	if len(q.Fields) > 0 {
		v.Set("fields", strings.Join(q.Fields, ","))
	}
	return v, nil
}

// FormatDeviceFilter is DeviceFilter.String for a filter built in code: it
// refuses what no parse gives (a value not of its field's type, an in-list
// value holding the separator |) instead of writing a filter that would read
// back as another.
func FormatDeviceFilter(f DeviceFilter) (string, error) {
	if key, isLabel := LabelKeyOf(f.Field); isLabel {
		if err := normalizeLabelFilter(key, f); err != nil {
			return "", err
		}
		for _, val := range f.Values {
			if x, ok := val.(string); ok && f.Op == OpIn && strings.Contains(x, "|") {
				return "", Errorf(EINVALIDFILTER, "filter %s:in: the value %q holds the list separator |", f.Field, x)
			}
		}
		return f.String(), nil
	}
	field, ok := DeviceFields[f.Field]
	if !ok {
		return "", Errorf(EINVALIDFILTER, "filter: unknown field %q", f.Field)
	}
	for _, val := range f.Values {
		switch x := val.(type) {
		case string:
			ok = field.Type == FieldString || field.Type == FieldEnum
			if f.Op == OpIn && strings.Contains(x, "|") {
				return "", Errorf(EINVALIDFILTER, "filter %s:in: the value %q holds the list separator |", f.Field, x)
			}
		case int64:
			ok = field.Type == FieldInt || field.Type == FieldTime
		case float64:
			ok = field.Type == FieldFloat
		case bool:
			ok = field.Type == FieldBool
		default:
			ok = false
		}
		if !ok {
			return "", Errorf(EINVALIDFILTER, "filter %s: value %v (%T) is not of the field's type", f.Field, val, val)
		}
	}
	return f.String(), nil
}
