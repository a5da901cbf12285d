package bench

import (
	"fmt"
	"strings"
	"time"
)

// HistoryFleetMarkdown renders the fleet-aggregate scenario for
// bench/README.md.
func HistoryFleetMarkdown(rs []HistoryFleetResult) string {
	var b strings.Builder
	b.WriteString("| store | devices | sites | readings | rollup rows read | avg p50 | avg p99 | p95 p50 | p95 p99 | baseline avg | baseline p95 | baseline ÷ rollups (p95, p99) | avg error | p95 error | bytes/reading: readings | rollups | Parquet | export readings/s | load readings/s |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %s | %s | %s | %s | %s | %s | %.0f× | %.1e | %.2f%% | %.0f | %.1f | %.1f | %.0f | %.0f |\n",
			r.Store, r.Devices, r.Sites, r.Readings, r.RollupRows, ms(r.Avg.P50), ms(r.Avg.P99), ms(r.P95.P50), ms(r.P95.P99),
			ms(r.BaselineAvg), ms(r.BaselineP95), float64(r.BaselineP95)/float64(r.P95.P99), r.MaxAvgError, 100*r.MaxP95Error,
			float64(r.ReadingBytes)/float64(r.Readings), float64(r.RollupBytes)/float64(r.Readings), float64(r.ParquetBytes)/float64(r.Readings), r.ExportRate, r.LoadRate)
	}
	return b.String()
}

// HistoryIngestMarkdown renders the rollups' cost on ingest.
func HistoryIngestMarkdown(rs []HistoryIngestResult) string {
	var b strings.Builder
	b.WriteString("| store | devices | sites | committed/s without rollups (rounds) | with rollups (rounds) | with ÷ without (medians) |\n")
	b.WriteString("|---|---:|---:|---|---|---:|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %.2f |\n", r.Store, r.Devices, r.Sites, rates(r.Without), rates(r.With), r.Ratio())
	}
	return b.String()
}

func rates(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(s, ", ")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
