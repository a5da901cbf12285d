package herd

import (
	"encoding/base64"
	"encoding/json"
	"hash/fnv"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// FieldType is the type of a projection column as the query language sees it.
type FieldType int

// Field types.
const (
	FieldString FieldType = iota
	FieldInt
	FieldFloat
	FieldBool
	FieldTime // stored as unix milliseconds; accepted as RFC 3339 or unix ms
	FieldEnum
)

// Field describes one column of the device projection that may be filtered
// and sorted on. Nullable columns hold NULL until a device reports them.
type Field struct {
	Name     string
	Type     FieldType
	Nullable bool
}

// DeviceFields is the allow-list of the device query: the projection
// columns, by their API (and SQL) names. Nothing else reaches SQL.
var DeviceFields = map[string]Field{}

// DeviceFieldNames lists DeviceFields in column order.
var DeviceFieldNames = []string{
	"id", "node_id", "path", "key", "name", "model", "firmware", "status",
	"online", "last_seen", "temperature", "humidity", "pressure", "voltage",
	"current", "power", "battery", "rssi", "uptime_s", "error_count",
	"config_version", "created_at",
}

func init() {
	for _, f := range []Field{
		{"id", FieldInt, false}, {"node_id", FieldInt, false},
		{"path", FieldString, false}, {"key", FieldString, false},
		{"name", FieldString, false}, {"model", FieldString, false},
		{"firmware", FieldString, false}, {"status", FieldEnum, false},
		{"online", FieldBool, false}, {"last_seen", FieldTime, true},
		{"temperature", FieldFloat, true}, {"humidity", FieldFloat, true},
		{"pressure", FieldFloat, true}, {"voltage", FieldFloat, true},
		{"current", FieldFloat, true}, {"power", FieldFloat, true},
		{"battery", FieldFloat, true}, {"rssi", FieldInt, true},
		{"uptime_s", FieldInt, true}, {"error_count", FieldInt, false},
		{"config_version", FieldInt, false}, {"created_at", FieldTime, false},
	} {
		DeviceFields[f.Name] = f
	}
}

// Filter operators.
const (
	OpEq     = "eq"
	OpNe     = "ne"
	OpLt     = "lt"
	OpLe     = "le"
	OpGt     = "gt"
	OpGe     = "ge"
	OpIn     = "in"
	OpPrefix = "prefix"
	// OpExists applies to labels only: label.KEY:exists:true keeps the
	// devices that have the key, false those that do not. On a label, eq
	// and in keep the devices that have the key with that value; ne keeps
	// every device whose label is not that value, those without the key
	// included ("ring is not canary" means the unlabelled devices too).
	// That differs from ne on a nullable column, which, as SQL does,
	// never keeps a NULL: a label is absent, not unknown.
	OpExists = "exists"
)

// MaxInValues bounds the values of one "in" filter: a short list typed by a
// person, never a list of ids computed by a program.
const MaxInValues = 100

// MaxFilters bounds the filters of one query.
const MaxFilters = 20

// MaxFilterValues bounds the values of all filters of one query together:
// MaxFilters in-lists of MaxInValues each would need more bind parameters
// than the store accepts (MaxQueryParams), and a query the parser accepts
// must not fail in the store.
const MaxFilterValues = 200

// Query limits.
const (
	DefaultLimit = 50
	MaxLimit     = 500
	// CountCap is where counting stops: counts are exact up to it and
	// reported as capped above it.
	CountCap = 10000
)

// DeviceFilter is one parsed FIELD:OP:VALUE condition. Values hold typed
// values: string, int64 (ints and times as unix ms), float64 or bool.
type DeviceFilter struct {
	Field  string
	Op     string
	Values []any
}

// DeviceSort is the order of a device query; the device id breaks ties in
// the same direction. NULLs sort before every value, so ascending pages
// start with them and descending pages end with them. A sort on a label
// (label.KEY) orders by its value, and the devices without the key come
// last in either direction (by id, in the sort's direction): a console
// sorting by ring wants the labelled devices first, whichever way.
type DeviceSort struct {
	Field string
	Desc  bool
}

// String returns the sort as the API spells it ("-temperature").
func (s DeviceSort) String() string {
	if s.Desc {
		return "-" + s.Field
	}
	return s.Field
}

// DeviceCursor is the keyset position after the last row of a page, and
// the count the first page reported. Later pages repeat that count instead
// of counting again: a table shows "51–100 of 1,234" without paying for the
// count on every page, and the count stays steady while the client pages.
type DeviceCursor struct {
	Null        bool // the last row's sort value was NULL
	Value       any  // the last row's sort value, typed as in DeviceFilter
	ID          int64
	Count       int64
	CountCapped bool
}

// DeviceQuery is a parsed scoped device query.
type DeviceQuery struct {
	// TenantID picks the tenant for a super-admin, who has no tenant of
	// their own; for users it must be zero or their tenant.
	TenantID int64
	Filters  []DeviceFilter
	Sort     DeviceSort
	Limit    int
	// Cursor is the next_cursor of the page before, as the client sent
	// it. The store checks its signature with its own key and decodes it
	// into After; ParseDeviceQuery only carries it.
	Cursor string
	// After is the position to page on from. Code that builds a query in
	// process may set it directly; a store sets it from Cursor.
	After *DeviceCursor
	// Search holds the folded words of q (see ParseSearch): a device
	// matches when it matches every one (Device.MatchesWord).
	Search []string
}

// DevicePage is one page of a device query.
type DevicePage struct {
	Items       []*Device `json:"items"`
	NextCursor  string    `json:"next_cursor"`
	Count       int64     `json:"count"`
	CountCapped bool      `json:"count_capped"`
}

// Normalize fills in the defaults of a query built in code (sort by id, the
// default limit) and checks it against the allow-lists, so that a store can
// trust every name it puts into SQL whoever built the query.
func (q *DeviceQuery) Normalize() error {
	if q.Sort.Field == "" {
		q.Sort.Field = "id"
	}
	if q.Limit == 0 {
		q.Limit = DefaultLimit
	}
	if _, ok := sortField(q.Sort.Field); !ok {
		return Errorf(EINVALIDSORT, "sort: unknown field %q", q.Sort.Field)
	} else if q.Limit < 1 || q.Limit > MaxLimit {
		return Errorf(EINVALIDLIMIT, "limit %d must be from 1 to %d", q.Limit, MaxLimit)
	} else if len(q.Filters) > MaxFilters {
		return Errorf(EINVALIDFILTER, "at most %d filters", MaxFilters)
	}
	nvalues := 0
	for i, f := range q.Filters {
		if f.Op == OpContains {
			if err := normalizeContains(&q.Filters[i]); err != nil {
				return err
			} else if nvalues++; nvalues > MaxFilterValues {
				return Errorf(EINVALIDFILTER, "at most %d filter values in one query", MaxFilterValues)
			}
			continue
		}
		if k, ok := LabelKeyOf(f.Field); ok {
			if err := normalizeLabelFilter(k, f); err != nil {
				return err
			} else if nvalues += len(f.Values); nvalues > MaxFilterValues {
				return Errorf(EINVALIDFILTER, "at most %d filter values in one query", MaxFilterValues)
			}
			continue
		}
		if _, ok := DeviceFields[f.Field]; !ok {
			return Errorf(EINVALIDFILTER, "filter: unknown field %q", f.Field)
		} else if nvalues += len(f.Values); nvalues > MaxFilterValues {
			return Errorf(EINVALIDFILTER, "at most %d filter values in one query", MaxFilterValues)
		}
		switch f.Op {
		case OpEq, OpNe, OpLt, OpLe, OpGt, OpGe, OpPrefix:
			if len(f.Values) != 1 {
				return Errorf(EINVALIDFILTER, "filter %s:%s takes one value", f.Field, f.Op)
			}
		case OpIn:
			if len(f.Values) < 1 || len(f.Values) > MaxInValues {
				return Errorf(EINVALIDFILTER, "filter %s:in takes 1 to %d values", f.Field, MaxInValues)
			}
		default:
			return Errorf(EINVALIDFILTER, "filter %s: unknown operator %q", f.Field, f.Op)
		}
		if f.Op == OpPrefix {
			if _, ok := f.Values[0].(string); !ok {
				return Errorf(EINVALIDFILTER, "filter %s:prefix takes text", f.Field)
			}
		}
	}
	if len(q.Search) > MaxSearchWords {
		return Errorf(EINVALIDFILTER, "q has %d words, at most %d allowed", len(q.Search), MaxSearchWords)
	}
	for i, w := range q.Search {
		f, err := FoldSearchText("q: the word", w)
		if err != nil {
			return err
		}
		q.Search[i] = f
	}
	return nil
}

// normalizeContains checks a contains filter built in code and folds its
// text, which the stores match as it is.
func normalizeContains(f *DeviceFilter) error {
	if !ContainsApplies(f.Field) {
		return Errorf(EINVALIDFILTER, "filter %s: operator contains applies to name, key, model, firmware and label.KEY", f.Field)
	} else if len(f.Values) != 1 {
		return Errorf(EINVALIDFILTER, "filter %s:contains takes one value", f.Field)
	}
	s, ok := f.Values[0].(string)
	if !ok {
		return Errorf(EINVALIDFILTER, "filter %s:contains takes text", f.Field)
	}
	term, err := FoldSearchText("filter "+f.Field+":contains: the text", s)
	if err != nil {
		return err
	}
	f.Values = []any{term}
	return nil
}

// ParseDeviceQuery parses the query string of GET /v1/devices. Every error
// names the part that is wrong.
func ParseDeviceQuery(v url.Values) (DeviceQuery, error) {
	q := DeviceQuery{Sort: DeviceSort{Field: "id"}, Limit: DefaultLimit}
	for key := range v {
		switch key {
		case "filter", "sort", "limit", "cursor", "tenant_id", "q":
		default:
			return q, Errorf(EINVALID, "unknown query parameter %q", key)
		}
	}
	if s := v.Get("tenant_id"); s != "" {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil || id <= 0 {
			return q, Errorf(EINVALID, "tenant_id %q is not an id", s)
		}
		q.TenantID = id
	}
	fs := v["filter"]
	if len(fs) > MaxFilters {
		return q, Errorf(EINVALIDFILTER, "at most %d filters", MaxFilters)
	}
	nvalues := 0
	for _, s := range fs {
		f, err := ParseDeviceFilter(s)
		if err != nil {
			return q, err
		}
		if nvalues += len(f.Values); nvalues > MaxFilterValues {
			return q, Errorf(EINVALIDFILTER, "filter %q: at most %d filter values in one query", s, MaxFilterValues)
		}
		q.Filters = append(q.Filters, f)
	}
	if s, ok := v["q"]; ok {
		if len(s) > 1 {
			return q, Errorf(EINVALIDFILTER, "q is given %d times; give it once, its words separated by spaces", len(s))
		}
		words, err := ParseSearch(s[0])
		if err != nil {
			return q, err
		}
		q.Search = words
	}
	if s := v.Get("sort"); s != "" {
		sort, err := ParseDeviceSort(s)
		if err != nil {
			return q, err
		}
		q.Sort = sort
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			return q, Errorf(EINVALIDLIMIT, "limit %q must be an integer from 1 to %d", s, MaxLimit)
		}
		q.Limit = n
	}
	if s := v.Get("cursor"); s != "" {
		// Only the store holds the key that checks a cursor; refusing what
		// cannot be one here keeps it from travelling further.
		if len(s) > maxCursorLen || strings.Trim(s, cursorAlphabet) != "" {
			return q, Errorf(EINVALIDCURSOR, "cursor is malformed")
		}
		q.Cursor = s
	}
	return q, nil
}

// ParseDeviceSort parses "FIELD" or "-FIELD".
func ParseDeviceSort(s string) (DeviceSort, error) {
	sort := DeviceSort{Field: s}
	if strings.HasPrefix(s, "-") {
		sort = DeviceSort{Field: s[1:], Desc: true}
	}
	if key, ok := LabelKeyOf(sort.Field); ok && !ValidLabelKey(key) {
		return sort, Errorf(EINVALIDSORT, "sort %q: %q is not a label key (1 to %d characters of a-z, 0-9, '_', '.', '/' and '-')", s, truncate(key, MaxLabelKeyLen+1), MaxLabelKeyLen)
	} else if _, ok := sortField(sort.Field); !ok {
		return sort, Errorf(EINVALIDSORT, "sort: unknown field %q", sort.Field)
	}
	return sort, nil
}

// ParseDeviceFilter parses one FIELD:OP:VALUE filter. The value is the rest
// of the string after the second colon, so it may contain colons itself
// (timestamps do).
func ParseDeviceFilter(s string) (DeviceFilter, error) {
	parts := strings.SplitN(s, ":", 3)
	if len(parts) != 3 {
		return DeviceFilter{}, Errorf(EINVALIDFILTER, "filter %q is not FIELD:OP:VALUE", s)
	}
	f := DeviceFilter{Field: parts[0], Op: parts[1]}
	if k, ok := LabelKeyOf(f.Field); ok {
		return parseLabelFilter(s, k, f, parts[2])
	}
	field, ok := DeviceFields[f.Field]
	if !ok {
		return f, Errorf(EINVALIDFILTER, "filter %q: unknown field %q", s, f.Field)
	}
	switch f.Op {
	case OpEq, OpNe:
	case OpLt, OpLe, OpGt, OpGe:
		if field.Type == FieldBool || field.Type == FieldEnum {
			return f, Errorf(EINVALIDFILTER, "filter %q: operator %q does not apply to %s", s, f.Op, f.Field)
		}
	case OpIn:
	case OpPrefix:
		if field.Type != FieldString {
			return f, Errorf(EINVALIDFILTER, "filter %q: operator prefix applies only to text fields", s)
		}
	case OpContains:
		if !containsFields[f.Field] {
			return f, Errorf(EINVALIDFILTER, "filter %q: operator contains applies to name, key, model, firmware and label.KEY", s)
		}
		term, err := FoldSearchText("filter "+strconv.Quote(s)+": the text", parts[2])
		if err != nil {
			return f, err
		}
		f.Values = []any{term}
		return f, nil
	default:
		return f, Errorf(EINVALIDFILTER, "filter %q: unknown operator %q (eq ne lt le gt ge in prefix contains; on labels eq ne in exists contains)", s, f.Op)
	}
	raw := []string{parts[2]}
	if f.Op == OpIn {
		raw = strings.Split(parts[2], "|")
		if len(raw) > MaxInValues {
			return f, Errorf(EINVALIDFILTER, "filter %q: at most %d values in a list", s, MaxInValues)
		}
	}
	for _, r := range raw {
		val, err := ParseFieldValue(field, r)
		if err != nil {
			return f, Errorf(EINVALIDFILTER, "filter %q: %s", s, ErrorMessage(err))
		}
		if f.Op == OpPrefix && val.(string) == "" {
			return f, Errorf(EINVALIDFILTER, "filter %q: empty prefix", s)
		}
		f.Values = append(f.Values, val)
	}
	return f, nil
}

// ParseFieldValue parses a text value as the field's type.
func ParseFieldValue(field Field, s string) (any, error) {
	switch field.Type {
	case FieldString:
		if len(s) > 1024 {
			return nil, Errorf(EINVALID, "value is longer than 1024 bytes")
		} else if !ValidText(s) {
			return nil, Errorf(EINVALID, "value is not valid UTF-8 text")
		}
		return s, nil
	case FieldEnum:
		// Empty is the status of a device that has reported none yet.
		if s != "" && !ValidStatus(s) {
			return nil, Errorf(EINVALID, "%q is not a status (ok warn alarm, or empty for none reported; connectivity is the online field)", s)
		}
		return s, nil
	case FieldInt:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, Errorf(EINVALID, "%q is not an integer", s)
		}
		return n, nil
	case FieldFloat:
		x, err := strconv.ParseFloat(s, 64)
		if err != nil || x != x || x > 1e300 || x < -1e300 {
			return nil, Errorf(EINVALID, "%q is not a number", s)
		}
		return x, nil
	case FieldBool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return nil, Errorf(EINVALID, "%q is not true or false", s)
		}
		return b, nil
	case FieldTime:
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n, nil
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return nil, Errorf(EINVALID, "%q is not an RFC 3339 time or unix milliseconds", s)
		} else if t.Nanosecond()%int(time.Millisecond) != 0 {
			// Times are stored in milliseconds; truncating would make lt
			// and ge include a row they exclude.
			return nil, Errorf(EINVALID, "%q is more precise than a millisecond", s)
		}
		return t.UnixMilli(), nil
	}
	return nil, Errorf(EINVALID, "unsupported field type")
}

// FieldValue returns the device's value of a projection field, typed as in
// DeviceFilter, and whether it is NULL; for label.KEY, the label's value,
// and NULL when the device does not have the key.
func (d *Device) FieldValue(name string) (v any, null bool) {
	f64 := func(p *float64) (any, bool) {
		if p == nil {
			return nil, true
		}
		return *p, false
	}
	i64 := func(p *int64) (any, bool) {
		if p == nil {
			return nil, true
		}
		return *p, false
	}
	if k, ok := LabelKeyOf(name); ok {
		v, has := d.Labels[k]
		if !has {
			return nil, true
		}
		return v, false
	}
	switch name {
	case "id":
		return d.ID, false
	case "node_id":
		return d.NodeID, false
	case "path":
		return d.Path, false
	case "key":
		return d.Key, false
	case "name":
		return d.Name, false
	case "model":
		return d.Model, false
	case "firmware":
		return d.Firmware, false
	case "status":
		return d.Status, false
	case "online":
		return d.Online, false
	case "last_seen":
		if d.LastSeen == nil {
			return nil, true
		}
		return d.LastSeen.UnixMilli(), false
	case "temperature":
		return f64(d.Temperature)
	case "humidity":
		return f64(d.Humidity)
	case "pressure":
		return f64(d.Pressure)
	case "voltage":
		return f64(d.Voltage)
	case "current":
		return f64(d.Current)
	case "power":
		return f64(d.Power)
	case "battery":
		return f64(d.Battery)
	case "rssi":
		return i64(d.RSSI)
	case "uptime_s":
		return i64(d.UptimeS)
	case "error_count":
		return d.ErrorCount, false
	case "config_version":
		return d.ConfigVersion, false
	case "created_at":
		return d.CreatedAt.UnixMilli(), false
	}
	panic("herd: unknown device field " + name)
}

// cursorVersion changes whenever the cursor's encoding does; older cursors
// are then rejected as malformed instead of being misread. Version 2 is
// signed (version 1 cursors carried no signature and are refused).
const cursorVersion = 2

// deviceCursorKind is what a device query's cursor is signed for.
const deviceCursorKind = "devices"

// cursorAlphabet holds every character a cursor is written with: unpadded
// URL-safe base64 and the dot before the signature.
const cursorAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."

// maxCursorLen bounds a cursor: the longest sort value a cursor carries is
// a device's text, well under it.
const maxCursorLen = 2048

type cursorJSON struct {
	V      int    `json:"v"`
	Hash   string `json:"h"`
	Null   bool   `json:"n,omitempty"`
	Key    string `json:"k,omitempty"`
	ID     int64  `json:"i,string"`
	Count  int64  `json:"c"`
	Capped bool   `json:"cc,omitempty"`
}

// fingerprint identifies the query a cursor belongs to: its filters and sort.
// A cursor carried to another query would page from a meaningless position,
// so it is refused instead.
func (q DeviceQuery) fingerprint() string {
	h := fnv.New64a()
	h.Write([]byte(strconv.FormatInt(q.TenantID, 10)))
	h.Write([]byte{0})
	h.Write([]byte(q.Sort.String()))
	for _, f := range q.Filters {
		h.Write([]byte{0})
		h.Write([]byte(f.Field + ":" + f.Op))
		for _, v := range f.Values {
			// Length-prefixed: text values may hold any byte but NUL.
			k := formatKey(v)
			h.Write([]byte{1})
			h.Write([]byte(strconv.Itoa(len(k)) + ":" + k))
		}
	}
	for _, w := range q.Search {
		h.Write([]byte{2})
		h.Write([]byte(strconv.Itoa(len(w)) + ":" + w))
	}
	return strconv.FormatUint(h.Sum64(), 36)
}

func formatKey(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	}
	return ""
}

// EncodeCursor returns the opaque cursor that continues q after the device,
// carrying the count of the first page, signed with key.
func (q DeviceQuery) EncodeCursor(key CursorKey, d *Device, count int64, capped bool) string {
	v, null := d.FieldValue(q.Sort.Field)
	return q.EncodeCursorAt(key, DeviceCursor{Null: null, Value: v, ID: d.ID, Count: count, CountCapped: capped})
}

// EncodeCursorAt returns the opaque cursor for a keyset position given by
// its parts: the sort value (typed as in DeviceFilter) and id of the last
// row, for a store that knows them without holding the row.
func (q DeviceQuery) EncodeCursorAt(key CursorKey, at DeviceCursor) string {
	c := cursorJSON{V: cursorVersion, Hash: q.fingerprint(), Null: at.Null, ID: at.ID, Count: at.Count, Capped: at.CountCapped}
	if !at.Null {
		c.Key = formatKey(at.Value)
	}
	buf, _ := json.Marshal(c)
	return key.sign(deviceCursorKind, base64.RawURLEncoding.EncodeToString(buf))
}

// DecodeCursor parses a cursor made by EncodeCursor with the same key for
// this same query (filters and sort); anything else is EINVALIDCURSOR. The
// signature is checked before anything in the cursor is read, so an edited
// count, position or sort, or a cursor of another store, is refused.
func (q DeviceQuery) DecodeCursor(key CursorKey, s string) (*DeviceCursor, error) {
	bad := Errorf(EINVALIDCURSOR, "cursor is malformed")
	if len(s) > maxCursorLen {
		return nil, bad
	}
	payload, ok := key.verify(deviceCursorKind, s)
	if !ok {
		return nil, Errorf(EINVALIDCURSOR, "cursor was not issued by this store to a caller with your grants, or was changed: page again from the first page")
	}
	buf, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return nil, bad
	}
	var c cursorJSON
	if err := json.Unmarshal(buf, &c); err != nil || c.V != cursorVersion {
		return nil, bad
	}
	if c.Hash != q.fingerprint() {
		return nil, Errorf(EINVALIDCURSOR, "cursor belongs to another query: keep filter and sort unchanged while paging")
	}
	if c.Count < 0 || c.Count > CountCap {
		return nil, bad
	}
	out := &DeviceCursor{Null: c.Null, ID: c.ID, Count: c.Count, CountCapped: c.Capped}
	if !c.Null {
		field, _ := sortField(q.Sort.Field)
		if field.Type == FieldTime {
			field.Type = FieldInt // times travel as unix ms in cursors
		}
		// A position is a stored value, which the bounds on filter input
		// (text length, float range) need not fit.
		var v any
		switch field.Type {
		case FieldFloat:
			x, err := strconv.ParseFloat(c.Key, 64)
			if err != nil || x != x {
				return nil, bad
			}
			v = x
		case FieldString:
			if !ValidText(c.Key) {
				return nil, bad
			}
			v = c.Key
		default:
			if v, err = ParseFieldValue(field, c.Key); err != nil {
				return nil, bad
			}
		}
		out.Value = v
	} else if field, _ := sortField(q.Sort.Field); !field.Nullable {
		return nil, bad
	}
	return out, nil
}

// ValidText reports whether s is valid UTF-8 without NUL bytes, which every
// store accepts as text.
func ValidText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// PrefixUpperBound returns the smallest string greater than every string
// starting with prefix, and false when there is none. It increments the last
// rune rather than the last byte so that the bound stays valid UTF-8, which
// PostgreSQL insists on; UTF-8 byte order equals code point order.
func PrefixUpperBound(prefix string) (string, bool) {
	rs := []rune(prefix)
	for i := len(rs) - 1; i >= 0; i-- {
		r := rs[i] + 1
		if r >= 0xD800 && r <= 0xDFFF {
			r = 0xE000
		}
		if r <= utf8.MaxRune {
			rs[i] = r
			return string(rs[:i+1]), true
		}
	}
	return "", false
}
