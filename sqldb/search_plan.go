package sqldb

import (
	"context"
	"fmt"
	"strings"

	"github.com/herd-iot/herd"
)

// The trigram indexes' part in a search: when the database, not the state
// cache, answers a search over a scope of some size, one search text may
// be rare enough in the tenant that finding its devices through the index
// and testing those against the scope beats testing every device of the
// scope. Neither engine's planner can tell (FTS5 is a virtual table to
// SQLite; PostgreSQL sees one LIKE), so the store asks the index: a capped
// count of the text's devices in the tenant, stopped at a quarter of the
// scope or searchProbeCap. A text under the cap drives the page; otherwise the scope is read
// and each device tested, as without an index.

// searchIndexFrom is the scope size from which the index is asked: below
// it reading the scope costs less than the question.
const searchIndexFrom = 2000

// searchProbeCap bounds the capped count: a text with more devices than
// this in the tenant reads the scope, and the question has cost a few
// thousand index entries, not a quarter of the scope (which on a 200k
// scope cost more than reading it).
const searchProbeCap = 5000

// searchDriver is the candidates statement of one search text: the ids of
// the tenant's devices that may hold it (a superset: the page's conditions
// test each exactly).
type searchDriver struct {
	sql  string
	args []any
}

// searchCandidates returns the candidates statement of a contains filter
// (field set) or a word of q (field empty, which the names of nodes match
// too).
func (db *DB) searchCandidates(tenantID int64, field, term string) searchDriver {
	var d searchDriver
	if db.dialect == SQLite {
		// The index keeps no positions or columns (detail = none, see
		// migration 0023), so the rows that hold every trigram of the
		// text, in any field, stand for those that hold the text.
		d.sql = `SELECT rowid FROM device_search_fts WHERE device_search_fts MATCH ? AND tenant_id = ?`
		d.args = []any{trigramQuery(term), tenantID}
	} else {
		d.sql = `SELECT s.device_id FROM device_search s WHERE s.tenant_id = ? AND ` + searchDocSQL + ` LIKE ?` + likeEscape
		d.args = []any{tenantID, likePattern(term)}
	}
	if field == "" {
		// The devices under a node so named, by the path index: a range
		// of it per such node (devices keep no index on node_id).
		d.sql += ` UNION ALL SELECT dv.id` + namedNodeSQL("devices", "dv")
		d.args = append(d.args, tenantID, likePattern(term))
	}
	return d
}

// maxQueryTrigrams bounds the trigrams a long text is asked by: the rows
// holding eight of them spread over the text are already few, and the
// page tests each.
const maxQueryTrigrams = 8

// trigramQuery is the FTS5 query of the rows holding every trigram of term
// (at least herd.MinSearchRunes characters), or eight of them spread from
// its first to its last: each trigram a one-token string, its quotes
// doubled.
func trigramQuery(term string) string {
	rs := []rune(term)
	n := len(rs) - 2
	if n < 1 {
		return `"` + strings.ReplaceAll(term, `"`, `""`) + `"`
	}
	var picks []int
	if n <= maxQueryTrigrams {
		for i := range n {
			picks = append(picks, i)
		}
	} else {
		for k := range maxQueryTrigrams {
			picks = append(picks, k*(n-1)/(maxQueryTrigrams-1))
		}
	}
	seen := map[string]bool{}
	var parts []string
	for _, i := range picks {
		t := string(rs[i : i+3])
		if !seen[t] {
			seen[t] = true
			parts = append(parts, `"`+strings.ReplaceAll(t, `"`, `""`)+`"`)
		}
	}
	return strings.Join(parts, " AND ")
}

// chooseSearchDriver returns the candidates statement of the query's
// rarest-enough search text, or false when none is under a quarter of the
// scope (or the scope is too small to ask).
func (tx *Tx) chooseSearchDriver(ctx context.Context, q herd.DeviceQuery, tenantID int64, inScope float64) (searchDriver, bool, error) {
	from := searchIndexFrom
	if tx.db.searchIndexFrom != 0 {
		from = tx.db.searchIndexFrom
	}
	if from < 0 || inScope < float64(from) {
		return searchDriver{}, false, nil
	}
	limit := min(int64(inScope/4), searchProbeCap)
	var texts [][2]string
	for _, f := range q.Filters {
		if f.Op == herd.OpContains {
			texts = append(texts, [2]string{f.Field, f.Values[0].(string)})
		}
	}
	for _, w := range q.Search {
		texts = append(texts, [2]string{"", w})
	}
	for _, t := range texts {
		d := tx.db.searchCandidates(tenantID, t[0], t[1])
		var n int64
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM (`+d.sql+` LIMIT ?) c`, append(append([]any(nil), d.args...), limit)...).Scan(&n); err != nil {
			return searchDriver{}, false, fmt.Errorf("search index: %w", err)
		}
		if n < limit {
			return d, true, nil
		}
	}
	return searchDriver{}, false, nil
}

// SetSearchIndexFrom makes a search ask its trigram index from scopes of n
// devices (tests with small trees), or never with n < 0 (a benchmark's
// baseline); zero restores the default. Call it before the DB is used.
func (db *DB) SetSearchIndexFrom(n int) { db.searchIndexFrom = n }
