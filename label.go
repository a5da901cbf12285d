package herd

import (
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Labels are the attributes operators filter devices by every day
// (customer, floor, ring, asset tag): a map of short keys to text values on
// each device, set on create and changed by a merge patch, key by key.
// Keys are lowercase so that "Ring" and "ring" are never two labels, and
// hold only characters that need no escaping in a filter or a URL.
const (
	MaxLabels        = 64  // labels on one device
	MaxLabelKeyLen   = 63  // bytes of a key
	MaxLabelValueLen = 255 // bytes of a value
)

// LabelFieldPrefix starts a filter field (and sort) on a label:
// label.ring:eq:canary.
const LabelFieldPrefix = "label."

// ValidLabelKey reports whether k is a label key: 1 to MaxLabelKeyLen of
// a-z, 0-9, '_', '.', '/' and '-'.
func ValidLabelKey(k string) bool {
	if k == "" || len(k) > MaxLabelKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '/' || c == '-') {
			return false
		}
	}
	return true
}

// CheckLabelKey returns EINVALID naming the key unless it is valid.
func CheckLabelKey(k string) error {
	if !ValidLabelKey(k) {
		return Errorf(EINVALID, "label key %q must be 1 to %d characters of a-z, 0-9, '_', '.', '/' and '-'", truncate(k, MaxLabelKeyLen+1), MaxLabelKeyLen)
	}
	return nil
}

// CheckLabels returns EINVALID naming the first bad key (in key order) or
// value, or the count when there are more than MaxLabels.
func CheckLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return Errorf(EINVALID, "labels: %d labels, at most %d allowed", len(labels), MaxLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if err := CheckLabelKey(k); err != nil {
			return err
		} else if err := CheckText("labels."+k, labels[k], MaxLabelValueLen); err != nil {
			return err
		}
	}
	return nil
}

// truncate cuts s to at most n bytes for an error message, at a rune
// boundary when s is valid UTF-8 (%q escapes what is not).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

// LabelKeyOf returns the label key of a filter or sort field
// ("label.ring" → "ring") and whether the field names a label at all.
func LabelKeyOf(field string) (string, bool) {
	return strings.CutPrefix(field, LabelFieldPrefix)
}

// MergeLabels applies a merge patch to labels (RFC 7396 for one object
// member): a nil value removes its key, any other sets it. A nil patch with
// clear set removes every label first ("labels": null). It returns a new
// map and never changes labels.
func MergeLabels(labels map[string]string, patch map[string]*string, clear bool) map[string]string {
	next := map[string]string{}
	if !clear {
		maps.Copy(next, labels)
	}
	for k, v := range patch {
		if v == nil {
			delete(next, k)
		} else {
			next[k] = *v
		}
	}
	return next
}

// parseLabelFilter parses the operator and value of a filter on a label
// (see OpExists); s is the whole filter, for the messages.
func parseLabelFilter(s, key string, f DeviceFilter, raw string) (DeviceFilter, error) {
	if !ValidLabelKey(key) {
		return f, Errorf(EINVALIDFILTER, "filter %q: %q is not a label key (1 to %d characters of a-z, 0-9, '_', '.', '/' and '-')", s, truncate(key, MaxLabelKeyLen+1), MaxLabelKeyLen)
	}
	switch f.Op {
	case OpEq, OpNe:
		f.Values = []any{raw}
	case OpIn:
		vals := strings.Split(raw, "|")
		if len(vals) > MaxInValues {
			return f, Errorf(EINVALIDFILTER, "filter %q: at most %d values in a list", s, MaxInValues)
		}
		for _, v := range vals {
			f.Values = append(f.Values, v)
		}
	case OpExists:
		switch raw {
		case "true":
			f.Values = []any{true}
		case "false":
			f.Values = []any{false}
		default:
			return f, Errorf(EINVALIDFILTER, "filter %q: exists takes true or false, not %q", s, truncate(raw, 20))
		}
	case OpContains:
		term, err := FoldSearchText("filter "+strconv.Quote(s)+": the text", raw)
		if err != nil {
			return f, err
		}
		return DeviceFilter{Field: f.Field, Op: OpContains, Values: []any{term}}, nil
	case OpLt, OpLe, OpGt, OpGe, OpPrefix:
		return f, Errorf(EINVALIDFILTER, "filter %q: operator %q does not apply to labels (eq ne in exists contains)", s, f.Op)
	default:
		return f, Errorf(EINVALIDFILTER, "filter %q: unknown operator %q (on labels eq ne in exists contains)", s, f.Op)
	}
	for _, v := range f.Values {
		if x, ok := v.(string); ok && (len(x) > MaxLabelValueLen || !ValidText(x)) {
			// No label holds such a value; saying so beats matching nothing.
			return f, Errorf(EINVALIDFILTER, "filter %q: a label value is valid UTF-8 text of at most %d bytes", s, MaxLabelValueLen)
		}
	}
	return f, nil
}

// normalizeLabelFilter is Normalize's check of a filter on a label built
// in code.
func normalizeLabelFilter(key string, f DeviceFilter) error {
	if !ValidLabelKey(key) {
		return Errorf(EINVALIDFILTER, "filter: %q is not a label key", truncate(key, MaxLabelKeyLen+1))
	}
	switch f.Op {
	case OpEq, OpNe, OpExists:
		if len(f.Values) != 1 {
			return Errorf(EINVALIDFILTER, "filter %s:%s takes one value", f.Field, f.Op)
		}
	case OpIn:
		if len(f.Values) < 1 || len(f.Values) > MaxInValues {
			return Errorf(EINVALIDFILTER, "filter %s:in takes 1 to %d values", f.Field, MaxInValues)
		}
	default:
		return Errorf(EINVALIDFILTER, "filter %s: operator %q does not apply to labels (eq ne in exists contains)", f.Field, f.Op)
	}
	for _, v := range f.Values {
		_, isText := v.(string)
		_, isBool := v.(bool)
		if (f.Op == OpExists) != isBool || (f.Op != OpExists && !isText) {
			return Errorf(EINVALIDFILTER, "filter %s:%s: exists takes a bool, the others text", f.Field, f.Op)
		}
	}
	return nil
}

// sortField describes a sort field: a projection column, or a label, which
// sorts as nullable text (NULL: the device does not have the key).
func sortField(name string) (Field, bool) {
	if k, ok := LabelKeyOf(name); ok {
		return Field{Name: name, Type: FieldString, Nullable: true}, ValidLabelKey(k)
	}
	f, ok := DeviceFields[name]
	return f, ok
}
