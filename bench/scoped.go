// Package bench holds herd's benchmark scenarios. Each runs against real
// stores and measures herd's way and its named baseline in the same run, so
// the ratios hold on a noisy machine. `herd bench <scenario>` runs them;
// bench/README.md keeps the latest figures and the commands.
package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/seed"
	"github.com/herd-iot/herd/sqldb"
)

// ScopedConfig configures the scoped-query scenario.
type ScopedConfig struct {
	// Store is a SQLite path or a postgres:// URL.
	Store string
	// Devices and Shape make the fleet. The default 1,000,000 devices in
	// 5x2x10x10 gives subtrees of 200k (region), 100k, 10k and 1k devices.
	Devices int64
	Shape   []int
	// Pages is how many pages are timed per scope and query; NaivePages the
	// same for the naive baseline, which is far slower.
	Pages      int
	NaivePages int
	// SmallPages is how many first pages are timed per limit for the
	// small-scope rows: the deepest level's last node sorted by id and its
	// first sorted by -id, at limits 1, 10 and 50. Seeded fleets are made
	// leaf by leaf, so these scopes sit at the far end of the sort order
	// (issue 12, 8.1). Zero skips them; Pages and NaivePages both zero skip
	// the rows of the three queries.
	SmallPages int
	// SearchPages is how many pages of each search query are timed over
	// the first region (200k of the default fleet), herd's way and the
	// baseline's (a tenth as many); zero skips them.
	SearchPages int
	Out         io.Writer
	Logger      *slog.Logger
}

// DefaultScopedConfig returns the configuration of the benchmark.
func DefaultScopedConfig() ScopedConfig {
	return ScopedConfig{Devices: 1_000_000, Shape: []int{5, 2, 10, 10}, Pages: 300, NaivePages: 15, SmallPages: 200, SearchPages: 200}
}

// ScopedQuery is one of the benchmark's three pages.
type ScopedQuery struct {
	Name    string
	Filters []string
	Sort    string
	Search  string // q
	// naiveWhere is the same filter for the hand-written naive query.
	naiveWhere string
}

// ScopedQueries are the three pages the issue names.
var ScopedQueries = []ScopedQuery{
	{Name: "all by -last_seen", Sort: "-last_seen"},
	{Name: "alarm by -temperature", Filters: []string{"status:eq:alarm"}, Sort: "-temperature", naiveWhere: " AND status = 'alarm'"},
	{Name: "temp>30 battery<20 by name", Filters: []string{"temperature:gt:30", "battery:lt:20"}, Sort: "name", naiveWhere: " AND temperature > 30 AND battery < 20"},
}

// SearchQueries are the search pages of issue 15: q with one and two words
// and a label filter with a contains, over the 200k scope. Their baseline
// is the same answer from the database with no state cache and no trigram
// index: LIKE '%…%' on each device of the scope.
var SearchQueries = []ScopedQuery{
	{Name: "q=pump", Search: "pump", Sort: "name"},
	{Name: "q=north pump", Search: "north pump", Sort: "name"},
	{Name: "ring=canary name~valve", Filters: []string{"label.ring:eq:canary", "name:contains:valve"}, Sort: "name"},
	// A rare text (a tenth of the devices have an asset tag, a hundredth
	// of those start so): the trigram index's case.
	{Name: "q=at-0001", Search: "at-0001", Sort: "name"},
}

// ScopedResult is one measured cell.
type ScopedResult struct {
	Store   string
	Scope   int64 // devices under the grant
	Query   string
	Method  string // "pages", "first", "next" or "naive"; "small" for the small-scope rows
	Limit   int    // the page size of a small-scope row
	Samples int
	P50     time.Duration
	P99     time.Duration
}

// RunScoped seeds the fleet (or reuses one seeded before in the same store),
// grants one user per scope size, and times pages of the three queries the
// scoped way and the naive way (fetch the user's device ids, pass them as an
// IN list).
func RunScoped(ctx context.Context, cfg ScopedConfig) ([]ScopedResult, error) {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	db := sqldb.NewDB(cfg.Store)
	db.Logger = cfg.Logger
	if err := db.Open(); err != nil {
		return nil, err
	}
	defer db.Close()
	super := herd.NewContextWithActor(ctx, &herd.Actor{Super: true})
	shape := make([]string, len(cfg.Shape))
	for i, n := range cfg.Shape {
		shape[i] = strconv.Itoa(n)
	}
	tenantName := fmt.Sprintf("bench-scoped-%d-%s", cfg.Devices, strings.Join(shape, "x"))

	var tenantID int64
	err := db.SQL().QueryRowContext(ctx, db.Rebind(`SELECT id FROM tenants WHERE name = ? ORDER BY id LIMIT 1`), tenantName).Scan(&tenantID)
	if errors.Is(err, sql.ErrNoRows) {
		start := time.Now()
		fmt.Fprintf(cfg.Out, "seeding %d devices in %s on %s\n", cfg.Devices, strings.Join(shape, "x"), db.Dialect())
		fleet, err := seed.Run(super, seed.Config{Tenant: tenantName, Devices: cfg.Devices, Shape: cfg.Shape, Seed: 1},
			sqldb.NewTenantService(db), sqldb.NewNodeService(db), db, ProgressPrinter(cfg.Out))
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(cfg.Out, "\nseeded in %s\n", time.Since(start).Round(time.Millisecond))
		tenantID = fleet.Tenant.ID
	} else if err != nil {
		return nil, err
	} else {
		fmt.Fprintf(cfg.Out, "reusing fleet %q on %s\n", tenantName, db.Dialect())
	}

	// herd serve loads the caches of large tenants when it starts; so does
	// the benchmark, before it measures.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	if err := db.WarmStateCache(ctx, tenantID); err != nil {
		return nil, err
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	fmt.Fprintf(cfg.Out, "state cache loaded in %s, heap +%d MiB\n", time.Since(start).Round(time.Millisecond), (int64(after.HeapAlloc)-int64(before.HeapAlloc))>>20)

	// The first node of each level is the first child of the first node of
	// the level above, so they nest: 200k ⊃ 100k ⊃ 10k ⊃ 1k.
	devices := sqldb.NewDeviceService(db)
	var results []ScopedResult
	if cfg.SmallPages > 0 {
		small, err := runSmallScopes(ctx, db, tenantID, cfg)
		if err != nil {
			return nil, err
		}
		results = append(results, small...)
	}
	if cfg.SearchPages > 0 {
		rs, err := runSearch(ctx, db, tenantID, cfg)
		if err != nil {
			return nil, err
		}
		results = append(results, rs...)
	}
	for depth := range cfg.Shape {
		if cfg.Pages == 0 && cfg.NaivePages == 0 {
			break
		}
		kind := seed.LevelKinds[depth]
		nodeID, path, scope, err := firstNode(ctx, db, tenantID, kind)
		if err != nil {
			return nil, err
		}
		userCtx, err := viewerOf(ctx, db, tenantID, nodeID, kind)
		if err != nil {
			return nil, err
		}
		for _, sq := range ScopedQueries {
			first, next, err := timeScoped(userCtx, devices, sq, cfg.Pages)
			if err != nil {
				return nil, fmt.Errorf("%s at %d: %w", sq.Name, scope, err)
			}
			naive, err := timeNaive(ctx, db, tenantID, path, sq, cfg.NaivePages)
			if err != nil {
				return nil, fmt.Errorf("naive %s at %d: %w", sq.Name, scope, err)
			}
			for _, m := range []struct {
				name string
				lat  []time.Duration
			}{{"pages", append(append([]time.Duration(nil), first...), next...)}, {"first", first}, {"next", next}, {"naive", naive}} {
				r := summarize(string(db.Dialect()), scope, sq.Name, m.name, m.lat)
				results = append(results, r)
				fmt.Fprintf(cfg.Out, "%-8s scope %-7d %-28s %-6s n=%-4d p50 %9s  p99 %9s\n", r.Store, scope, sq.Name, m.name, r.Samples, fmtDur(r.P50), fmtDur(r.P99))
			}
		}
	}
	return results, nil
}

// firstNode returns the tenant's first node of a kind, its path and the
// devices under it.
func firstNode(ctx context.Context, db *sqldb.DB, tenantID int64, kind string) (nodeID int64, path string, scope int64, err error) {
	if err := db.SQL().QueryRowContext(ctx, db.Rebind(`SELECT id, path FROM nodes WHERE tenant_id = ? AND kind = ? ORDER BY id LIMIT 1`), tenantID, kind).Scan(&nodeID, &path); err != nil {
		return 0, "", 0, fmt.Errorf("find first %s: %w", kind, err)
	}
	if err := db.SQL().QueryRowContext(ctx, db.Rebind(`SELECT COUNT(*) FROM devices WHERE tenant_id = ? AND path >= ? AND path < ?`), tenantID, path, herd.PathUpperBound(path)).Scan(&scope); err != nil {
		return 0, "", 0, fmt.Errorf("count devices under the first %s: %w", kind, err)
	}
	return nodeID, path, scope, nil
}

// viewerOf creates a user with a viewer grant on the node and returns a
// context acting as them, authenticated the way a request is.
func viewerOf(ctx context.Context, db *sqldb.DB, tenantID, nodeID int64, kind string) (context.Context, error) {
	super := herd.NewContextWithActor(ctx, &herd.Actor{Super: true})
	users := sqldb.NewUserService(db)
	u := &herd.User{TenantID: tenantID, Name: fmt.Sprintf("bench %s %d", kind, time.Now().UnixNano())}
	if err := users.CreateUser(super, u); err != nil {
		return nil, err
	}
	if err := sqldb.NewGrantService(db).CreateGrant(super, &herd.Grant{UserID: u.ID, NodeID: nodeID, Role: herd.RoleViewer}); err != nil {
		return nil, err
	}
	tok, err := users.CreateToken(super, u.ID)
	if err != nil {
		return nil, err
	}
	a, err := users.Authenticate(ctx, tok.Secret)
	if err != nil {
		return nil, err
	}
	return herd.NewContextWithActor(ctx, a), nil
}

// SmallScopeLimits are the page sizes of the small-scope rows: 1 is the
// cheap "how many?" call, 10 and 50 the first page of a table.
var SmallScopeLimits = []int{1, 10, 50}

// runSmallScopes times first pages for a viewer of one deepest-level node
// at each end of the id order, sorted so that the walk of the id index
// meets the rest of the tenant before the scope: the last node by id, the
// first by -id.
func runSmallScopes(ctx context.Context, db *sqldb.DB, tenantID int64, cfg ScopedConfig) ([]ScopedResult, error) {
	kind := "level-" + strconv.Itoa(len(cfg.Shape))
	if len(cfg.Shape) <= len(seed.LevelKinds) {
		kind = seed.LevelKinds[len(cfg.Shape)-1]
	}
	devices := sqldb.NewDeviceService(db)
	var results []ScopedResult
	for _, end := range []struct{ name, order, sort string }{{"last", "DESC", "id"}, {"first", "ASC", "-id"}} {
		var nodeID int64
		var path string
		if err := db.SQL().QueryRowContext(ctx, db.Rebind(`SELECT id, path FROM nodes WHERE tenant_id = ? AND kind = ? ORDER BY id `+end.order+` LIMIT 1`), tenantID, kind).Scan(&nodeID, &path); err != nil {
			return nil, fmt.Errorf("find %s %s: %w", end.name, kind, err)
		}
		var scope int64
		if err := db.SQL().QueryRowContext(ctx, db.Rebind(`SELECT COUNT(*) FROM devices WHERE tenant_id = ? AND path >= ? AND path < ?`), tenantID, path, herd.PathUpperBound(path)).Scan(&scope); err != nil {
			return nil, err
		}
		userCtx, err := viewerOf(ctx, db, tenantID, nodeID, kind)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("%s %s by %s", end.name, kind, end.sort)
		for _, limit := range SmallScopeLimits {
			q := herd.DeviceQuery{Sort: herd.DeviceSort{Field: "id", Desc: end.sort == "-id"}, Limit: limit}
			lat := make([]time.Duration, 0, cfg.SmallPages)
			for range cfg.SmallPages {
				start := time.Now()
				page, err := devices.QueryDevices(userCtx, q)
				if err != nil {
					return nil, fmt.Errorf("%s limit %d: %w", name, limit, err)
				} else if len(page.Items) == 0 {
					return nil, fmt.Errorf("%s limit %d: empty page", name, limit)
				}
				lat = append(lat, time.Since(start))
			}
			r := summarize(string(db.Dialect()), scope, name, "small", lat)
			r.Limit = limit
			results = append(results, r)
			fmt.Fprintf(cfg.Out, "%-8s scope %-7d %-28s limit %-3d n=%-4d p50 %9s  p99 %9s\n", r.Store, scope, name, limit, r.Samples, fmtDur(r.P50), fmtDur(r.P99))
		}
	}
	return results, nil
}

// timeScoped times pages of the query: the first page (which counts) and
// the pages after it (which carry the count in the cursor), following
// cursors ten deep, over and over.
func timeScoped(ctx context.Context, devices herd.DeviceService, sq ScopedQuery, pages int) (first, next []time.Duration, err error) {
	v := map[string][]string{"filter": sq.Filters, "sort": {sq.Sort}, "limit": {"50"}}
	if sq.Search != "" {
		v["q"] = []string{sq.Search}
	}
	q, err := herd.ParseDeviceQuery(v)
	if err != nil {
		return nil, nil, err
	}
	depth := 0
	for len(first)+len(next) < pages {
		start := time.Now()
		page, err := devices.QueryDevices(ctx, q)
		if err != nil {
			return nil, nil, err
		}
		if q.Cursor == "" {
			first = append(first, time.Since(start))
		} else {
			next = append(next, time.Since(start))
		}
		depth++
		if page.NextCursor == "" || depth == 10 {
			q.Cursor, depth = "", 0
			continue
		}
		// The store checks the cursor it issued, as for an API client.
		q.Cursor = page.NextCursor
	}
	return first, next, nil
}

// timeNaive times the first page computed the naive way: fetch the user's
// device ids, then pass them as an IN list to the page query and to the
// count. The ids go inline as literals, as ORMs do once a list outgrows the
// engines' parameter caps (SQLite 32,766, PostgreSQL 65,535).
func timeNaive(ctx context.Context, db *sqldb.DB, tenantID int64, path string, sq ScopedQuery, pages int) ([]time.Duration, error) {
	col, dir := sq.Sort, "ASC"
	if strings.HasPrefix(col, "-") {
		col, dir = col[1:], "DESC"
	}
	lat := make([]time.Duration, 0, pages)
	for len(lat) < pages {
		start := time.Now()
		rows, err := db.SQL().QueryContext(ctx, db.Rebind(`SELECT id FROM devices WHERE tenant_id = ? AND path >= ? AND path < ?`), tenantID, path, herd.PathUpperBound(path))
		if err != nil {
			return nil, err
		}
		var b strings.Builder
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, err
			}
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatInt(id, 10))
		}
		rows.Close()
		in := "id IN (" + b.String() + ")"
		page, err := db.SQL().QueryContext(ctx, `SELECT id, name FROM devices WHERE `+in+sq.naiveWhere+` ORDER BY `+col+` `+dir+`, id `+dir+` LIMIT 51`)
		if err != nil {
			return nil, err
		}
		n := 0
		for page.Next() {
			n++
		}
		page.Close()
		var count int64
		if err := db.SQL().QueryRowContext(ctx, `SELECT COUNT(*) FROM devices WHERE `+in+sq.naiveWhere).Scan(&count); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(start))
	}
	return lat, nil
}

func summarize(store string, scope int64, query, method string, lat []time.Duration) ScopedResult {
	slices.Sort(lat)
	return ScopedResult{Store: store, Scope: scope, Query: query, Method: method, Samples: len(lat),
		P50: percentile(lat, 0.50), P99: percentile(lat, 0.99)}
}

// percentile returns the nearest-rank percentile of sorted samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// cell renders a duration of a result, or a dash when it has no samples.
func cell(r ScopedResult, d time.Duration) string {
	if r.Samples == 0 {
		return "–"
	}
	return fmtDur(d)
}

func fmtDur(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 2, 64) + "ms"
}

// ProgressPrinter returns a seed progress callback that redraws one line
// per phase and ends it when the phase is done.
func ProgressPrinter(w io.Writer) func(seed.Progress) {
	start, phase, finished := time.Now(), "", false
	return func(p seed.Progress) {
		if p.Phase != phase {
			start, phase, finished = time.Now(), p.Phase, false
		}
		if finished {
			return
		}
		pct := float64(p.Done) / float64(max(p.Total, 1)) * 100
		rate := float64(p.Done) / max(time.Since(start).Seconds(), 1e-3)
		const width = 30
		fill := min(width, int(pct/100*width))
		bar := strings.Repeat("#", fill) + strings.Repeat(".", width-fill)
		fmt.Fprintf(w, "\r%-7s [%s] %5.1f%% %d/%d (%.0f/s)   ", p.Phase, bar, pct, p.Done, p.Total, rate)
		if p.Done >= p.Total {
			fmt.Fprintln(w)
			finished = true
		}
	}
}

// ScopedMarkdown renders results as the tables of bench/README.md, with the
// ratios the issue sets targets for.
func ScopedMarkdown(results []ScopedResult) string {
	type key struct {
		store, query string
		scope        int64
	}
	cells := map[key]map[string]ScopedResult{}
	var keys []key
	var small []ScopedResult
	for _, r := range results {
		if r.Method == "small" {
			small = append(small, r)
			continue
		}
		k := key{r.Store, r.Query, r.Scope}
		if cells[k] == nil {
			cells[k] = map[string]ScopedResult{}
			keys = append(keys, k)
		}
		cells[k][r.Method] = r
	}
	var b strings.Builder
	if len(small) > 0 {
		b.WriteString("| store | scope | first page of | limit | p50 | p99 |\n|---|---:|---|---:|---:|---:|\n")
		for _, r := range small {
			fmt.Fprintf(&b, "| %s | %d | %s | %d | %s | %s |\n", r.Store, r.Scope, r.Query, r.Limit, fmtDur(r.P50), fmtDur(r.P99))
		}
		if len(keys) == 0 {
			return b.String()
		}
		b.WriteString("\n")
	}
	b.WriteString("| store | query | scope | all pages p50 | all pages p99 | first page p99 | next pages p99 | naive p50 | naive p99 | naive ÷ scoped (first page p50) |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, k := range keys {
		c := cells[k]
		ratio := float64(c["naive"].P50) / float64(max(c["first"].P50, 1))
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %.0f× |\n", k.store, k.query, k.scope,
			cell(c["pages"], c["pages"].P50), cell(c["pages"], c["pages"].P99), cell(c["first"], c["first"].P99), cell(c["next"], c["next"].P99),
			cell(c["naive"], c["naive"].P50), cell(c["naive"], c["naive"].P99), ratio)
	}
	b.WriteString("\n| store | query | p99(largest) ÷ p99(smallest), all pages | same, next pages |\n|---|---|---:|---:|\n")
	seen := map[[2]string]bool{}
	for _, k := range keys {
		sq := [2]string{k.store, k.query}
		if seen[sq] {
			continue
		}
		seen[sq] = true
		var lo, hi key
		for _, k2 := range keys {
			if k2.store == k.store && k2.query == k.query {
				if lo.scope == 0 || k2.scope < lo.scope {
					lo = k2
				}
				if k2.scope > hi.scope {
					hi = k2
				}
			}
		}
		next := "–" // the smallest scope may fit in one page
		if cells[lo]["next"].Samples > 0 && cells[hi]["next"].Samples > 0 {
			next = fmt.Sprintf("%.1f", float64(cells[hi]["next"].P99)/float64(cells[lo]["next"].P99))
		}
		fmt.Fprintf(&b, "| %s | %s | %.1f | %s |\n", k.store, k.query,
			float64(cells[hi]["pages"].P99)/float64(max(cells[lo]["pages"].P99, 1)), next)
	}
	return b.String()
}
