package sqldb

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/herd-iot/herd"
)

// Search over device metadata (migration 0023): FIELD:contains:TEXT and the
// words of q, matched as LIKE '%text%' on text herd folded when it wrote
// it (herd.FoldText), so that both stores answer as the oracle does,
// whatever their collation. device_search holds a device's folded fields,
// device_labels.value_fold a label's folded value (NULL when folding keeps
// it), nodes.name_fold a node's folded name. The trigram indexes over
// device_search (FTS5 on SQLite, pg_trgm on PostgreSQL) find the devices
// of a tenant that hold a text without reading its scope.

// searchColumns are device_search's columns, in the order searchArgs gives;
// the trigram index of SQLite (device_search_fts) holds the same after the
// id, its rowid.
const (
	searchColumns = "device_id, " + ftsColumns
	ftsColumns    = "tenant_id, name, key, model, firmware, labels"
)

// searchDocSQL is device_search's fields of a row s as one text, newline
// separated (no search text holds a newline, so no match spans two): the
// expression PostgreSQL's trigram index is built on, written as the
// migration writes it.
const searchDocSQL = "(s.name || '\n' || s.key || '\n' || s.model || '\n' || s.firmware || '\n' || s.labels)"

// searchArgs are the values of a device's device_search row.
func searchArgs(d *herd.Device) []any {
	return []any{d.ID, d.TenantID, herd.FoldText(d.Name), herd.FoldText(d.Key), herd.FoldText(d.Model), herd.FoldText(d.Firmware), foldLabels(d.Labels)}
}

// foldLabels joins the folded label values in key order with newlines.
func foldLabels(labels map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(labels)) {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(herd.FoldText(labels[k]))
	}
	return b.String()
}

// valueFold is device_labels.value_fold of a value: NULL when folding
// leaves it as it is.
func valueFold(v string) any {
	if f := herd.FoldText(v); f != v {
		return f
	}
	return nil
}

// insertSearch writes the device_search rows of new devices, whose ids are
// set, in multi-row statements under the parameter guard (on PostgreSQL,
// one statement of seven arrays instead of fifteen of 71 rows a batch).
func (tx *Tx) insertSearch(ctx context.Context, ds []*herd.Device) error {
	if tx.db.dialect == Postgres {
		return tx.insertSearchArrays(ctx, ds)
	}
	const cols = 7
	per := herd.MaxQueryParams / cols
	for start := 0; start < len(ds); start += per {
		chunk := ds[start:min(start+per, len(ds))]
		args := make([]any, 0, cols*len(chunk))
		for _, d := range chunk {
			args = append(args, searchArgs(d)...)
		}
		q := `INSERT INTO device_search (` + searchColumns + `) VALUES ` + strings.TrimSuffix(strings.Repeat("(?,?,?,?,?,?,?),", len(chunk)), ",")
		if _, err := tx.execChunk(ctx, len(chunk) == per, q, args...); err != nil {
			return fmt.Errorf("index devices for search: %w", err)
		}
	}
	if len(ds) == 0 {
		return nil
	}
	// The trigram index of the whole batch in one statement (see migration
	// 0023): one FTS5 segment, not one a chunk.
	ids, err := json.Marshal(deviceIDs(ds))
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO device_search_fts (rowid, `+ftsColumns+`)
		SELECT device_id, `+ftsColumns+` FROM device_search WHERE device_id IN (SELECT value FROM json_each(?))`, string(ids)); err != nil {
		return fmt.Errorf("index devices for search: trigrams: %w", err)
	}
	return nil
}

// insertSearchArrays is insertSearch on PostgreSQL: the batch's rows as one
// array a column, unnested. It is a write of the batch's own new rows, not
// a list of ids standing for a scope.
func (tx *Tx) insertSearchArrays(ctx context.Context, ds []*herd.Device) error {
	if len(ds) == 0 {
		return nil
	}
	ids, tenants := make([]int64, len(ds)), make([]int64, len(ds))
	var text [5][]string
	for i, d := range ds {
		a := searchArgs(d)
		ids[i], tenants[i] = d.ID, d.TenantID
		for k := range text {
			text[k] = append(text[k], a[2+k].(string))
		}
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO device_search (`+searchColumns+`) `+unnestRows("BIGINT", "BIGINT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT"),
		ids, tenants, text[0], text[1], text[2], text[3], text[4])
	if err != nil {
		return fmt.Errorf("index devices for search: %w", err)
	}
	return nil
}

func deviceIDs(ds []*herd.Device) []int64 {
	ids := make([]int64, len(ds))
	for i, d := range ds {
		ids[i] = d.ID
	}
	return ids
}

// updateSearch writes a changed device's device_search row again.
func (tx *Tx) updateSearch(ctx context.Context, d *herd.Device) error {
	a := searchArgs(d)
	_, err := tx.ExecContext(ctx, `UPDATE device_search SET name = ?, key = ?, model = ?, firmware = ?, labels = ? WHERE device_id = ? AND tenant_id = ?`,
		a[2], a[3], a[4], a[5], a[6], d.ID, d.TenantID)
	if err != nil {
		return fmt.Errorf("index the device for search: %w", err)
	}
	return nil
}

// firmwareChange is a device whose readings reported a firmware.
type firmwareChange struct {
	deviceID, tenantID int64
	firmware           string // as the projection holds it after the batch
}

// updateSearchFirmware sets device_search's firmware of devices whose
// readings carried one; only rows whose folded firmware differs are
// written, so a device that reports the same firmware in every reading
// costs a primary-key lookup, not a write or a trigram index update.
func (tx *Tx) updateSearchFirmware(ctx context.Context, changes []firmwareChange) error {
	folded := map[string]string{}
	per := (herd.MaxQueryParams - 1) / 3
	for start := 0; start < len(changes); start += per {
		chunk := changes[start:min(start+per, len(changes))]
		args := make([]any, 0, 3*len(chunk))
		for _, c := range chunk {
			f, ok := folded[c.firmware]
			if !ok {
				f = herd.FoldText(c.firmware)
				folded[c.firmware] = f
			}
			args = append(args, c.deviceID, c.tenantID, f)
		}
		q := tx.memoText(fmt.Sprintf("search-firmware/%d", len(chunk)), func() string {
			return `WITH v (id, tenant_id, firmware) AS (VALUES ` + strings.TrimSuffix(strings.Repeat("(CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS TEXT)),", len(chunk)), ",") +
				`) UPDATE device_search SET firmware = v.firmware FROM v WHERE device_search.device_id = v.id AND device_search.tenant_id = v.tenant_id AND device_search.firmware <> v.firmware`
		})
		if _, err := tx.execChunk(ctx, len(chunk) == per, q, args...); err != nil {
			return fmt.Errorf("index reported firmware for search: %w", err)
		}
	}
	return nil
}

// indexReportedFirmware updates the search index of the devices whose
// readings in the batch carried a firmware, to the firmware the projection
// holds after it (folded: the devices as applyFolds left them).
func (tx *Tx) indexReportedFirmware(ctx context.Context, items []herd.IngestItem, folded map[int64]rollupDevice) error {
	var changes []firmwareChange
	var done map[int64]bool // made at the first firmware: most batches carry none
	for i := range items {
		it := &items[i]
		if it.Kind != herd.IngestReading || it.Reading.Has&herd.ReadingFirmware == 0 || done[it.DeviceID] {
			continue
		}
		d, ok := folded[it.DeviceID]
		if !ok {
			continue // not a device any more
		}
		if done == nil {
			done = map[int64]bool{}
		}
		done[it.DeviceID] = true
		changes = append(changes, firmwareChange{deviceID: it.DeviceID, tenantID: it.TenantID, firmware: d.firmware})
	}
	return tx.updateSearchFirmware(ctx, changes)
}

// likePattern is the LIKE pattern (with likeEscape) that keeps the text
// holding term.
func likePattern(term string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(term) + "%"
}

// likeEscape follows every LIKE of a search. Both engines read '\' as one
// backslash (PostgreSQL with standard_conforming_strings, its default).
const likeEscape = ` ESCAPE '\'`

// searchFieldSQL is the folded text of a contains field of the devices row.
func searchFieldSQL(field string) string {
	switch field {
	case "name", "key", "model", "firmware":
		return `(SELECT s.` + field + ` FROM device_search s WHERE s.device_id = devices.id AND s.tenant_id = devices.tenant_id)`
	}
	panic("sqldb: unvalidated contains field " + field)
}

// labelFoldSQL is the folded value of the label whose key is bound, of the
// devices row, or NULL when it does not have the key.
const labelFoldSQL = `(SELECT COALESCE(l.value_fold, l.value) FROM device_labels l WHERE l.device_id = devices.id AND l.key = ? AND l.tenant_id = devices.tenant_id)`

// whereContains appends FIELD:contains:TEXT: a lookup by primary key of
// the device's folded text, tested with LIKE (the folded text has no
// uppercase ASCII letter, so SQLite's case-blind LIKE is exact on it).
func whereContains(b *strings.Builder, f herd.DeviceFilter, args []any) []any {
	term := f.Values[0].(string)
	if key, ok := herd.LabelKeyOf(f.Field); ok {
		b.WriteString(" AND " + labelFoldSQL + " LIKE ?" + likeEscape)
		return append(args, key, likePattern(term))
	}
	b.WriteString(" AND " + searchFieldSQL(f.Field) + " LIKE ?" + likeEscape)
	return append(args, likePattern(term))
}

// namedNodeSQL is the FROM and WHERE of the nodes a (of the tenant bound
// first) whose folded name holds the pattern bound second, joined to the
// rows t of table (nodes or devices) at or under each: t's path in the
// node's range, herd.PathUpperBound written in SQL.
func namedNodeSQL(table, t string) string {
	return ` FROM nodes a JOIN ` + table + ` ` + t + ` ON ` + t + `.tenant_id = a.tenant_id AND ` + t + `.path >= a.path AND ` + t + `.path < (substr(a.path, 1, length(a.path) - 1) || '0')` +
		` WHERE a.tenant_id = ? AND a.name_fold LIKE ?` + likeEscape
}

// nodeMatchSQL selects the nodes of a tenant (bound first) at or under a
// node whose folded name holds the pattern bound second: the devices
// attached to them match a word of q through a node's name. It reads the
// tenant's nodes, never its devices.
var nodeMatchSQL = `SELECT d.id` + namedNodeSQL("nodes", "d")

// whereSearch appends the words of q: each must be held by the device's
// folded fields (a primary-key lookup of its device_search row) or by the
// name of a node on its path.
func whereSearch(b *strings.Builder, words []string, tenantID int64, args []any) []any {
	for _, w := range words {
		p := likePattern(w)
		// A scalar subquery, as the contains filters use, not EXISTS:
		// PostgreSQL may turn a correlated EXISTS into a hashed subplan
		// over the whole table; a scalar one is a lookup by primary key
		// of each row tested.
		b.WriteString(` AND ((SELECT ` + searchDocSQL + ` FROM device_search s WHERE s.device_id = devices.id AND s.tenant_id = devices.tenant_id) LIKE ?` + likeEscape +
			` OR devices.node_id IN (` + nodeMatchSQL + `))`)
		args = append(args, p, tenantID, p)
	}
	return args
}

// searchFilter reports whether the query searches: a contains or q.
func searchFilter(q herd.DeviceQuery) bool {
	if len(q.Search) > 0 {
		return true
	}
	for _, f := range q.Filters {
		if f.Op == herd.OpContains {
			return true
		}
	}
	return false
}

// matchingNodes returns, for each word, the ids of the tenant's nodes whose
// devices match it through a node's name (see nodeMatchSQL): what the state
// cache tests a device's node against, since it keeps no node names.
func (tx *Tx) matchingNodes(ctx context.Context, tenantID int64, words []string) ([]map[int64]bool, error) {
	out := make([]map[int64]bool, len(words))
	for i, w := range words {
		rows, err := tx.QueryContext(ctx, nodeMatchSQL, tenantID, likePattern(w))
		if err != nil {
			return nil, fmt.Errorf("nodes named like a word of q: %w", err)
		}
		m := map[int64]bool{}
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, err
			}
			m[id] = true
		}
		if err := rows.Close(); err != nil {
			return nil, err
		} else if err := rows.Err(); err != nil {
			return nil, err
		}
		out[i] = m
	}
	return out, nil
}
