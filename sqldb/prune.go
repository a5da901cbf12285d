package sqldb

import (
	"context"
	"time"
)

// ProcessedGrace is how long past the event stream's retention the
// consumers' records of applied events are kept: a replay of the whole
// stream still finds every record it needs.
const ProcessedGrace = 24 * time.Hour

// Prune forgets what the store no longer needs, given the event stream's
// retention: the consumers' records of events the stream no longer holds
// (ProcessedGrace past the retention), idempotency keys past their 24 h,
// and the events of the log older than the retention (the log keeps what
// the stream keeps). herd runs it hourly in every process; each delete is
// idempotent. Failures are logged and left for the next run.
func (db *DB) Prune(ctx context.Context, retention time.Duration) {
	report := func(what string, n int64, err error) {
		if err != nil && ctx.Err() == nil {
			db.Logger.Warn("pruning "+what+" failed", "err", err)
		} else if n > 0 {
			db.Logger.Info(what+" pruned", "rows", n)
		}
	}
	now := db.Now()
	n, err := db.PruneProcessed(ctx, now.Add(-retention-ProcessedGrace))
	report("consumers' records", n, err)
	n, err = db.PruneIdempotencyKeys(ctx)
	report("idempotency keys", n, err)
	n, err = db.PruneEvents(ctx, now.Add(-retention))
	report("the event log", n, err)
}
