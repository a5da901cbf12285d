package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"
)

// HistoryIngestConfig configures the rollups' cost on ingest: the same
// closed loop as the ingest scenario (each device one reading in flight),
// against herd serve with the rollups on and with them off (the baseline),
// in alternating rounds on one store, devices spread over sites so that a
// commit updates the rollups of many.
type HistoryIngestConfig struct {
	Herd     string
	Stores   []string
	Dir      string
	Devices  int
	PerSite  int
	Inflight int
	Duration time.Duration
	Rounds   int
	Out      io.Writer
}

// DefaultHistoryIngestConfig: 10,000 devices, 100 a site.
func DefaultHistoryIngestConfig() HistoryIngestConfig {
	return HistoryIngestConfig{Devices: 10000, PerSite: 100, Inflight: 1, Duration: 8 * time.Second, Rounds: 3}
}

// HistoryIngestResult is one store's rates, each round's, with and without
// the rollups.
type HistoryIngestResult struct {
	Store         string
	Devices       int
	Sites         int
	With, Without []float64 // committed readings a second, by round
}

// Ratio is the median rate with the rollups over the median without.
func (r HistoryIngestResult) Ratio() float64 { return median(r.With) / median(r.Without) }

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// RunHistoryIngest runs the comparison on every store.
func RunHistoryIngest(ctx context.Context, cfg HistoryIngestConfig) ([]HistoryIngestResult, error) {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Inflight == 0 {
		cfg.Inflight = 1
	}
	var out []HistoryIngestResult
	for _, store := range cfg.Stores {
		dsn, kind, err := freshStore(ctx, store, cfg.Dir, "history-ingest")
		if err != nil {
			return out, err
		}
		fmt.Fprintf(cfg.Out, "%s: provisioning %d devices, %d a site\n", kind, cfg.Devices, cfg.PerSite)
		db, _, devices, err := provisionFleetOn(ctx, dsn, cfg.Devices, cfg.PerSite)
		if err != nil {
			return out, err
		}
		res := HistoryIngestResult{Store: kind, Devices: cfg.Devices, Sites: (cfg.Devices + cfg.PerSite - 1) / cfg.PerSite}
		for round := range cfg.Rounds {
			// Each order in turn: the second run of a round meets a
			// larger table and a warmer cache.
			order := []string{"off", "on"}
			if round%2 == 1 {
				order = []string{"on", "off"}
			}
			for _, rollups := range order {
				rate, err := historyIngestRound(ctx, cfg, dsn, devices, rollups)
				if err != nil {
					db.Close()
					return out, err
				}
				fmt.Fprintf(cfg.Out, "%s round %d, rollups %s: %.0f readings/s committed\n", kind, round+1, rollups, rate)
				if rollups == "on" {
					res.With = append(res.With, rate)
				} else {
					res.Without = append(res.Without, rate)
				}
			}
		}
		db.Close()
		out = append(out, res)
	}
	return out, nil
}

// historyIngestRound runs one closed loop against a fresh herd serve.
func historyIngestRound(ctx context.Context, cfg HistoryIngestConfig, store string, devices []loadDevice, rollups string) (float64, error) {
	p, err := startServer(ctx, cfg.Herd, store, "--rollups", rollups)
	if err != nil {
		return 0, err
	}
	defer p.stop()
	st, err := runLoad(ctx, p.mqtt, devices, 0, cfg.Inflight, cfg.Duration, nil)
	if err == nil {
		err = st.check()
	}
	if err != nil {
		return 0, err
	}
	return float64(st.acked) / st.elapsed.Seconds(), nil
}
