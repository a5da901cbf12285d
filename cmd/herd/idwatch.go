package main

import (
	"context"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/idguard"
	"github.com/herd-iot/herd/sqldb"
	"github.com/prometheus/client_golang/prometheus"
)

// IDWatchWarn is the share of an id range from which herd warns about its
// own store.
const IDWatchWarn = 0.70

// idWatch checks herd's own store's id columns: their headroom as metrics,
// their growth from the previous check, and an event in every tenant's log
// when one crosses the warn level.
type idWatch struct {
	m        *Main
	ratio    *prometheus.GaugeVec
	daysLeft *prometheus.GaugeVec
	warned   map[string]bool
}

func newIDWatch(m *Main) *idWatch {
	return &idWatch{
		m: m,
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

func (w *idWatch) collectors() []prometheus.Collector {
	return []prometheus.Collector{w.ratio, w.daysLeft}
}

// check reads the columns, updates the metrics, keeps the reading, and
// writes an event for each column that passed the warn level since the
// last check.
func (w *idWatch) check(ctx context.Context) {
	d := idguard.SQLite
	if w.m.DB.Dialect() == sqldb.Postgres {
		d = idguard.Postgres
	}
	cols, err := idguard.Scan(ctx, w.m.DB.SQL(), d, nil)
	if err != nil {
		if ctx.Err() == nil {
			w.m.Logger.Warn("id headroom check failed", "err", err)
		}
		return
	}
	now := time.Now()
	// Growth from the oldest reading of the last week, kept in the store
	// so that it survives restarts; then this reading joins them.
	if old, err := w.m.DB.OldestIDSamples(ctx, now.Add(-7*24*time.Hour)); err == nil {
		for _, o := range old {
			if elapsed := now.Sub(o.At); elapsed > time.Minute {
				cols = idguard.Growth([]idguard.Column{{Table: o.Table, Column: o.Column, Used: uint64(max(o.Used, 0))}}, cols, elapsed)
			}
		}
	}
	samples := make([]sqldb.IDSample, len(cols))
	for i, c := range cols {
		samples[i] = sqldb.IDSample{Table: c.Table, Column: c.Column, At: now, Used: int64(min(c.Used, 1<<63-1))}
	}
	if err := w.m.DB.RecordIDSamples(ctx, samples); err != nil && ctx.Err() == nil {
		w.m.Logger.Warn("id headroom readings not kept", "err", err)
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
		w.m.Logger.Warn("an id column of herd's store passed the warn level", "table", c.Table, "column", c.Column, "used", c.Used, "max", c.Max, "ratio", c.Ratio)
		if err := w.m.DB.AppendStoreEvent(ctx, herd.EventIDHeadroomWarning, c); err != nil {
			w.m.Logger.Warn("id headroom event not written", "err", err)
			delete(w.warned, key) // next check tries again
		}
	}
}
