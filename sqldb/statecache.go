package sqldb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/statecache"
)

// StateCacheConfig says which scoped queries the in-memory state cache
// answers (see package statecache). The indexes serve sorting and the status
// filter; any other filter over a large scope makes the database fetch every
// row it then tests, so those queries go to the cache.
type StateCacheConfig struct {
	// MinTenantDevices is the tenant size from which a tenant is cached;
	// zero or less turns the cache off. A cached device costs about 250
	// bytes of memory.
	MinTenantDevices int64
	// MinScope is the scope size from which a query is answered from the
	// cache; below it the database's own plans are fast enough.
	MinScope int64
	// Always answers every query from the cache, loading a tenant at its
	// first query rather than in the background. For tests, which must see
	// the cache's answers, not the database's.
	Always bool
	// Refresh is how often loaded caches catch up in the background, so that
	// the catch-up a query makes first has little to read.
	Refresh time.Duration
}

// DefaultStateCache is the configuration NewDB starts with.
var DefaultStateCache = StateCacheConfig{MinTenantDevices: 20000, MinScope: 10000, Refresh: time.Second}

// retryLoad is how long a failed cache load waits before a query tries again.
const retryLoad = 30 * time.Second

// stateCaches holds the loaded tenants' caches.
type stateCaches struct {
	mu      sync.Mutex
	tenants map[int64]*tenantCache
	started bool
	stop    chan struct{}
	done    sync.WaitGroup
}

// tenantCache is one tenant's cache and how far it has read the changes.
type tenantCache struct {
	tenantID int64
	cache    *statecache.Cache

	// sync serialises loading and catching up, which move horizon.
	sync sync.Mutex
	// horizon is where the next catch-up reads from: on SQLite the last rev
	// read (rows with a greater rev are new), on PostgreSQL the oldest
	// transaction then running (rows with a rev at or above it may be new).
	horizon  int64
	mark     string // see readChanges
	ready    bool   // guarded by stateCaches.mu
	failedAt time.Time
}

// cachedTenant returns the tenant's cache when it is loaded. Otherwise it
// starts loading it in the background and returns nil, and the query reads
// the database meanwhile; with wait it loads it first.
func (db *DB) cachedTenant(ctx context.Context, tenantID int64, wait bool) (*tenantCache, error) {
	sc := &db.caches
	sc.mu.Lock()
	if sc.tenants == nil {
		sc.tenants = map[int64]*tenantCache{}
		sc.stop = make(chan struct{})
	}
	tc := sc.tenants[tenantID]
	if tc != nil && tc.ready {
		sc.mu.Unlock()
		return tc, nil
	}
	if tc == nil || (!tc.failedAt.IsZero() && time.Since(tc.failedAt) >= retryLoad) {
		tc = &tenantCache{tenantID: tenantID, cache: statecache.New()}
		sc.tenants[tenantID] = tc
		if !sc.started {
			sc.started = true
			sc.done.Add(1)
			go db.refreshCaches()
		}
		if !wait {
			sc.mu.Unlock()
			// The load outlives the request that asked for it, not the DB:
			// Close cancels it and waits for it.
			db.bg.Go(func(ctx context.Context) { db.loadCache(ctx, tc) })
			return nil, nil
		}
	}
	sc.mu.Unlock()
	if !wait {
		return nil, nil // loading, or failed a moment ago
	}
	if err := db.loadCache(ctx, tc); err != nil {
		return nil, err
	}
	return tc, nil
}

// WarmStateCache loads a tenant's cache now, so that the first queries find
// it ready: herd serve warms its large tenants at start, benchmarks before
// they measure.
func (db *DB) WarmStateCache(ctx context.Context, tenantID int64) (err error) {
	defer wrapOp("sqldb.WarmStateCache", &err)
	_, err = db.cachedTenant(ctx, tenantID, true)
	return err
}

// WarmStateCaches loads the caches of every tenant large enough to be
// cached, one after another.
func (db *DB) WarmStateCaches(ctx context.Context) (err error) {
	defer wrapOp("sqldb.WarmStateCaches", &err)
	if db.StateCache.MinTenantDevices <= 0 {
		return nil
	}
	rows, err := db.rdb.QueryContext(ctx, db.rebind(`SELECT t.id FROM tenants t JOIN nodes n ON n.id = t.root_node_id WHERE n.device_count >= ?`), db.StateCache.MinTenantDevices)
	if err != nil {
		return err
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	if err := rows.Close(); err != nil {
		return err
	}
	for _, id := range ids {
		if err := db.WarmStateCache(ctx, id); err != nil {
			return fmt.Errorf("tenant %d: %w", id, err)
		}
	}
	return nil
}

// loadCache reads the tenant's devices into its cache, unless another
// caller did while this one waited.
func (db *DB) loadCache(ctx context.Context, tc *tenantCache) error {
	tc.sync.Lock()
	defer tc.sync.Unlock()
	db.caches.mu.Lock()
	ready := tc.ready
	db.caches.mu.Unlock()
	if ready {
		return nil
	}
	start := time.Now()
	n, err := db.readChanges(ctx, tc, true)
	db.caches.mu.Lock()
	defer db.caches.mu.Unlock()
	if err != nil {
		tc.failedAt = time.Now()
		db.Logger.Error("state cache load failed", "tenant", tc.tenantID, "err", err)
		return fmt.Errorf("load state cache: %w", err)
	}
	tc.ready = true
	db.metrics.cacheLoads.Inc()
	db.Logger.Info("state cache loaded", "tenant", tc.tenantID, "devices", n, "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// catchUp applies the device changes committed since the cache last read.
func (db *DB) catchUp(ctx context.Context, tc *tenantCache) error {
	tc.sync.Lock()
	defer tc.sync.Unlock()
	start := time.Now()
	defer func() { db.metrics.cacheCatchUp.Observe(time.Since(start).Seconds()) }()
	// Most of the time nothing has committed: one statement, outside a
	// transaction, says so (a BEGIN and a ROLLBACK are two more round trips
	// to PostgreSQL on every query).
	var horizon int64
	var mark string
	if db.QueryHook != nil {
		db.QueryHook(db.horizonSQL(), nil)
	}
	if err := db.rdb.QueryRowContext(ctx, db.rebind(db.horizonSQL())).Scan(&horizon, &mark); err != nil {
		return fmt.Errorf("change horizon: %w", err)
	} else if mark == tc.mark {
		return nil
	}
	_, err := db.readChanges(ctx, tc, false)
	return err
}

// horizonSQL reads the change horizon and the mark of readChanges.
func (db *DB) horizonSQL() string {
	if db.dialect == Postgres {
		return `SELECT pg_snapshot_xmin(s)::text::bigint, s::text FROM pg_current_snapshot() AS s`
	}
	return `SELECT value, CAST(value AS TEXT) FROM counters WHERE name = 'device_rev'`
}

// readChanges reads, in one snapshot, the new horizon and the device rows
// and tombstones past the old one (all rows when loading), and applies them.
// On PostgreSQL the snapshot's xmin is the oldest transaction still running:
// every transaction before it has ended, and one at or after it that commits
// later stamps revs at or above it, so the next read, from it, finds its
// rows. Rows of transactions already read are read again, harmlessly.
func (db *DB) readChanges(ctx context.Context, tc *tenantCache, all bool) (int, error) {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	// The mark tells whether anything committed since the last read: the
	// counter on SQLite; on PostgreSQL the whole snapshot, which any commit
	// of a writing transaction changes (its xid leaves the running list, or
	// a new xid moves xmax).
	past := "rev > ?"
	if db.dialect == Postgres {
		past = "rev >= ?"
	}
	var horizon int64
	var mark string
	if err := tx.QueryRowContext(ctx, db.horizonSQL()).Scan(&horizon, &mark); err != nil {
		return 0, fmt.Errorf("change horizon: %w", err)
	}
	if !all && mark == tc.mark {
		return 0, nil
	}
	where, args := "tenant_id = ?", []any{tc.tenantID}
	if !all {
		where += " AND " + past
		args = append(args, tc.horizon)
	}
	// The labels of the rows read, from the same snapshot: those of every
	// device of the tenant when loading, else of the devices changed past
	// the horizon (a label change takes the device a new rev).
	labels := map[int64]map[string]string{}
	labelSQL, labelArgs := `SELECT device_id, key, value FROM device_labels WHERE tenant_id = ?`, []any{tc.tenantID}
	if !all {
		labelSQL += ` AND device_id IN (SELECT id FROM devices WHERE ` + where + `)`
		labelArgs = append(labelArgs, args...)
	}
	if err := tx.scanLabels(ctx, labelSQL, labelArgs,
		func(id int64, k, v string) {
			m := labels[id]
			if m == nil {
				m = map[string]string{}
				labels[id] = m
			}
			m[k] = v
		}); err != nil {
		return 0, err
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE `+where, args...)
	if err != nil {
		return 0, err
	}
	const batch = 1024
	buf := make([]*herd.Device, 0, batch)
	n := 0
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			rows.Close()
			return 0, err
		}
		d.Labels = labels[d.ID]
		if buf = append(buf, d); len(buf) == batch {
			tc.cache.Upsert(buf...)
			buf = buf[:0]
		}
		n++
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return 0, err
	}
	tc.cache.Upsert(buf...)
	if !all {
		// Ids are never reused, so a tombstone cannot hide a newer row.
		rows, err := tx.QueryContext(ctx, `SELECT device_id FROM device_tombstones WHERE `+where, args...)
		if err != nil {
			return 0, err
		}
		var gone []int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return 0, err
			}
			gone = append(gone, id)
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return 0, err
		}
		tc.cache.Delete(gone...)
		n += len(gone)
	}
	tc.horizon, tc.mark = horizon, mark
	return n, nil
}

// refreshCaches catches the loaded caches up every Refresh until Close.
func (db *DB) refreshCaches() {
	defer db.caches.done.Done()
	every := db.StateCache.Refresh
	if every <= 0 {
		every = DefaultStateCache.Refresh
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-db.caches.stop:
			return
		case <-t.C:
		}
		db.caches.mu.Lock()
		var ready []*tenantCache
		var devices, bytes int64
		for _, tc := range db.caches.tenants {
			if tc.ready {
				ready = append(ready, tc)
				devices += int64(tc.cache.Len())
				bytes += tc.cache.Bytes()
			}
		}
		db.caches.mu.Unlock()
		db.metrics.cacheDevices.Set(float64(devices))
		db.metrics.cacheBytes.Set(float64(bytes))
		for _, tc := range ready {
			ctx, cancel := context.WithTimeout(context.Background(), every*10)
			if err := db.catchUp(ctx, tc); err != nil {
				db.Logger.Warn("state cache catch-up failed", "tenant", tc.tenantID, "err", err)
			}
			cancel()
		}
	}
}

// closeCaches stops the background refresh.
func (db *DB) closeCaches() {
	db.caches.mu.Lock()
	started := db.caches.started
	if started {
		close(db.caches.stop)
		db.caches.started = false
	}
	db.caches.mu.Unlock()
	if started {
		db.caches.done.Wait()
	}
}

// servedByIndexes reports whether the database's indexes answer the query
// without fetching rows that it then discards: the sort has an index, and
// the filters are a status (which the status indexes serve) or an equality
// on a column that finds a handful of rows.
func servedByIndexes(q herd.DeviceQuery) bool {
	if !sortIndexed[q.Sort.Field] {
		return false
	}
	for _, f := range q.Filters {
		if selectiveFields[f.Field] && (f.Op == herd.OpEq || f.Op == herd.OpIn || f.Op == herd.OpPrefix) {
			return true
		}
	}
	if len(q.Search) > 0 {
		return false
	}
	for _, f := range q.Filters {
		if f.Field != "status" || f.Op != herd.OpEq {
			return false
		}
	}
	return true
}

// cacheFor returns the cache that should answer the query, or nil.
func (db *DB) cacheFor(ctx context.Context, q herd.DeviceQuery, scope herd.Scope, p plan) (*tenantCache, error) {
	cfg := db.StateCache
	if cfg.MinTenantDevices <= 0 {
		return nil, nil
	}
	if !cfg.Always && (p.total < float64(cfg.MinTenantDevices) || p.inScope < float64(cfg.MinScope) || servedByIndexes(q)) {
		return nil, nil
	}
	return db.cachedTenant(ctx, scope.TenantID, cfg.Always)
}

// queryCached answers a page from the cache: the cache picks the page's
// ids and counts, the database returns those rows, re-applying the scope
// and filters, so that a row the cache has not yet seen change is dropped
// rather than shown. ok is false when the cache declines the query.
func (s *DeviceService) queryCached(ctx context.Context, tx *Tx, tc *tenantCache, q herd.DeviceQuery, scope herd.Scope, where string, args []any) (page *herd.DevicePage, ok bool, err error) {
	if err := s.db.catchUp(ctx, tc); err != nil {
		return nil, false, err
	}
	// The cache keeps no node names: the nodes whose devices a word
	// matches through a node's name come from the tenant's nodes.
	var words []statecache.SearchWord
	if len(q.Search) > 0 {
		nodes, err := tx.matchingNodes(ctx, scope.TenantID, q.Search)
		if err != nil {
			return nil, false, err
		}
		for i, w := range q.Search {
			words = append(words, statecache.SearchWord{Word: w, Nodes: nodes[i]})
		}
	}
	res, ok := tc.cache.Query(statecache.Query{Paths: scope.Paths, Filters: q.Filters, Search: words, Sort: q.Sort, After: q.After, Limit: q.Limit + 1})
	if !ok {
		return nil, false, nil
	}
	page = &herd.DevicePage{Items: []*herd.Device{}}
	if q.After == nil {
		page.Count = res.Count
		if page.Count > herd.CountCap {
			page.Count, page.CountCapped = herd.CountCap, true
		}
	} else {
		page.Count, page.CountCapped = q.After.Count, q.After.CountCapped
	}
	hits := res.Hits
	if len(hits) > q.Limit {
		hits = hits[:q.Limit]
		last := hits[len(hits)-1]
		page.NextCursor = q.EncodeCursorAt(s.db.cursorKey.For(scope), herd.DeviceCursor{Null: last.Null, Value: last.Value, ID: last.ID, Count: page.Count, CountCapped: page.CountCapped})
	}
	// One page of ids, in as few statements as the parameter guard allows.
	per := herd.MaxQueryParams - len(args)
	if per < 1 {
		return nil, false, nil
	}
	found := make(map[int64]*herd.Device, len(hits))
	for start := 0; start < len(hits); start += per {
		chunk := hits[start:min(start+per, len(hits))]
		chunkArgs := append([]any(nil), args...)
		for _, h := range chunk {
			chunkArgs = append(chunkArgs, h.ID)
		}
		rows, err := tx.QueryContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE `+where+` AND id IN (`+strings.TrimSuffix(strings.Repeat("?,", len(chunk)), ",")+`)`, chunkArgs...)
		if err != nil {
			return nil, false, err
		}
		for rows.Next() {
			d, err := scanDevice(rows)
			if err != nil {
				rows.Close()
				return nil, false, err
			}
			found[d.ID] = d
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return nil, false, err
		}
	}
	for _, h := range hits {
		if d := found[h.ID]; d != nil {
			page.Items = append(page.Items, d)
		}
	}
	if err := tx.attachLabels(ctx, scope.TenantID, page.Items); err != nil {
		return nil, false, err
	}
	return page, true, nil
}
