package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/herd-iot/herd/seed"
	"github.com/herd-iot/herd/sqldb"
)

// runSearch times the search pages over the first node of the top level
// (200k devices of the default fleet): herd's way (the state cache, as
// herd serve answers a scope that large) and, on a second handle of the
// same store with the state cache off and the trigram index never asked,
// the baseline: the database tests each device of the scope with LIKE.
// The trigram index's own path (no state cache) is timed too.
func runSearch(ctx context.Context, db *sqldb.DB, tenantID int64, cfg ScopedConfig) ([]ScopedResult, error) {
	kind := seed.LevelKinds[0]
	nodeID, _, scope, err := firstNode(ctx, db, tenantID, kind)
	if err != nil {
		return nil, err
	}
	userCtx, err := viewerOf(ctx, db, tenantID, nodeID, kind+" search")
	if err != nil {
		return nil, err
	}
	open := func(searchIndexFrom int) (*sqldb.DB, error) {
		other := sqldb.NewDB(cfg.Store)
		other.Logger = cfg.Logger
		other.StateCache.MinTenantDevices = 0
		other.SetSearchIndexFrom(searchIndexFrom)
		return other, other.Open()
	}
	base, err := open(-1)
	if err != nil {
		return nil, err
	}
	defer base.Close()
	index, err := open(0)
	if err != nil {
		return nil, err
	}
	defer index.Close()
	var out []ScopedResult
	for _, sq := range SearchQueries {
		for _, m := range []struct {
			name  string
			db    *sqldb.DB
			pages int
		}{{"pages", db, cfg.SearchPages}, {"index", index, max(cfg.SearchPages/10, 5)}, {"naive", base, max(cfg.SearchPages/10, 5)}} {
			first, next, err := timeScoped(userCtx, sqldb.NewDeviceService(m.db), sq, m.pages)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", m.name, sq.Name, err)
			}
			lat := append(append([]time.Duration(nil), first...), next...)
			r := summarize(string(db.Dialect()), scope, sq.Name, m.name, lat)
			out = append(out, r)
			fmt.Fprintf(cfg.Out, "%-8s scope %-7d %-28s %-6s n=%-4d p50 %9s  p99 %9s\n", r.Store, scope, sq.Name, m.name, r.Samples, fmtDur(r.P50), fmtDur(r.P99))
		}
	}
	return out, nil
}
