package sqldb

import (
	"context"
	"database/sql"
	"errors"

	"github.com/herd-iot/herd"
)

// HistoryService implements herd.HistoryService: the reads of the telemetry
// history. One device's readings are in history_device.go, the fleet
// aggregates over the rollups in aggregate.go, the latest-state summary in
// summary.go and the export in history_export.go.
type HistoryService struct {
	db *DB
	// RawLimit bounds the readings an aggregate reads when the rollups
	// cannot answer it; zero means MaxAggregateReadings. The benchmark
	// lifts it to compute its baseline.
	RawLimit int64
}

var _ herd.HistoryService = (*HistoryService)(nil)

// NewHistoryService returns the history reads of db.
func NewHistoryService(db *DB) *HistoryService { return &HistoryService{db: db} }

// historyScope is the scope of a read over many devices: the actor's scope
// in the tenant (a super-admin names it), narrowed to nodeID's subtree when
// nodeID is not zero. A node the actor may not see (one outside their
// grants, an ancestor of a grant among them) is ENOTFOUND, as
// GET /v1/nodes/{id} answers it.
func (tx *Tx) historyScope(ctx context.Context, a *herd.Actor, tenantID, nodeID int64) (herd.Scope, error) {
	scope, err := tx.queryScope(ctx, a, herd.DeviceQuery{TenantID: tenantID})
	if err != nil || nodeID == 0 {
		return scope, err
	}
	var path string
	err = tx.QueryRowContext(ctx, `SELECT path FROM nodes WHERE id = ? AND tenant_id = ?`, nodeID, scope.TenantID).Scan(&path)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !scope.Covers(path)) {
		return herd.Scope{}, herd.Errorf(herd.ENOTFOUND, "node %d not found", nodeID)
	} else if err != nil {
		return herd.Scope{}, err
	}
	return herd.Scope{TenantID: scope.TenantID, Paths: []string{path}}, nil
}
