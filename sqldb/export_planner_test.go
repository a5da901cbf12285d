package sqldb

import (
	"context"

	"github.com/herd-iot/herd"
)

// PlanDeviceQuery returns the access path QueryDevices picks for the first
// page of q ("scope", "walk" or "walk capped") and the most index entries
// that page may read (plan.mayPass), so that a test can show, without
// timing anything, that a small scope's page costs what the scope costs,
// not what the tenant does.
func (s *DeviceService) PlanDeviceQuery(ctx context.Context, q herd.DeviceQuery) (string, int64, error) {
	a, err := actor(ctx)
	if err != nil {
		return "", 0, err
	}
	if err := q.Normalize(); err != nil {
		return "", 0, err
	}
	tx, err := s.db.beginRead(ctx)
	if err != nil {
		return "", 0, err
	}
	defer tx.Rollback()
	scope, err := tx.queryScope(ctx, a, q)
	if err != nil {
		return "", 0, err
	}
	p, err := tx.planQuery(ctx, q, scope)
	if err != nil {
		return "", 0, err
	}
	name := "walk"
	if p.small {
		name = "scope"
	} else if p.walkCap > 0 {
		name = "walk capped"
	}
	return name, p.mayPass(len(keysetSegments(q, s.db.dialect))), nil
}
