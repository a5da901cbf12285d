package sqldb

import (
	"context"
	"log/slog"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/idguard"
	"github.com/prometheus/client_golang/prometheus"
)

// IDWatchWarn is the share of an id range from which herd warns about its
// own store.
const IDWatchWarn = 0.70

// IDWatch checks the store's own id columns: their headroom as metrics,
// their growth from the readings of the last week (kept in the store, so
// that days left survives restarts), and an event in every tenant's log
// when one crosses IDWatchWarn. One goroutine calls Check at a time.
type IDWatch struct {
	db       *DB
	Logger   *slog.Logger
	ratio    *prometheus.GaugeVec
	daysLeft *prometheus.GaugeVec
	warned   map[string]bool
}

// NewIDWatch returns an IDWatch of db's store.
func NewIDWatch(db *DB) *IDWatch {
	return &IDWatch{
		db:     db,
		Logger: db.Logger,
		ratio: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herd_id_headroom_ratio",
			Help: "Share of its range an id column of herd's own store has used (the least of its type and sequence); herd warns at 0.7.",
		}, []string{"table", "column"}),
		daysLeft: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herd_id_days_left",
			Help: "Days until an id column of herd's own store runs out at the rate since the previous check; absent while it does not grow.",
		}, []string{"table", "column"}),
		warned: map[string]bool{},
	}
}

// Collectors returns the watch's metrics.
func (w *IDWatch) Collectors() []prometheus.Collector {
	return []prometheus.Collector{w.ratio, w.daysLeft}
}

// Check reads the columns, updates the metrics, keeps the reading, and
// writes an event for each column that passed the warn level since the
// last check. Failures are logged: the next check tries again.
func (w *IDWatch) Check(ctx context.Context) {
	d := idguard.SQLite
	if w.db.Dialect() == Postgres {
		d = idguard.Postgres
	}
	cols, err := idguard.Scan(ctx, w.db.SQL(), d, nil)
	if err != nil {
		if ctx.Err() == nil {
			w.Logger.Warn("id headroom check failed", "err", err)
		}
		return
	}
	now := time.Now()
	// Growth from the oldest reading of the last week; then this reading
	// joins them.
	if old, err := w.db.OldestIDSamples(ctx, now.Add(-7*24*time.Hour)); err == nil {
		for _, o := range old {
			if elapsed := now.Sub(o.At); elapsed > time.Minute {
				cols = idguard.Growth([]idguard.Column{{Table: o.Table, Column: o.Column, Used: uint64(max(o.Used, 0))}}, cols, elapsed)
			}
		}
	}
	samples := make([]IDSample, len(cols))
	for i, c := range cols {
		samples[i] = IDSample{Table: c.Table, Column: c.Column, At: now, Used: int64(min(c.Used, 1<<63-1))}
	}
	if err := w.db.RecordIDSamples(ctx, samples); err != nil && ctx.Err() == nil {
		w.Logger.Warn("id headroom readings not kept", "err", err)
	}
	for _, c := range cols {
		w.ratio.WithLabelValues(c.Table, c.Column).Set(c.Ratio)
		if c.PerDay > 0 {
			w.daysLeft.WithLabelValues(c.Table, c.Column).Set(c.DaysLeft)
		}
		key := c.Key()
		if c.Ratio < IDWatchWarn {
			delete(w.warned, key)
			continue
		}
		if w.warned[key] {
			continue
		}
		w.warned[key] = true
		w.Logger.Warn("an id column of herd's store passed the warn level", "table", c.Table, "column", c.Column, "used", c.Used, "max", c.Max, "ratio", c.Ratio)
		if err := w.db.AppendStoreEvent(ctx, herd.EventIDHeadroomWarning, c); err != nil {
			w.Logger.Warn("id headroom event not written", "err", err)
			delete(w.warned, key) // next check tries again
		}
	}
}
