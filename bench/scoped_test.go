package bench_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/herd-iot/herd/bench"
)

// TestRunScoped runs the scenario on a small fleet so that it keeps working;
// its timings mean nothing here.
func TestRunScoped(t *testing.T) {
	cfg := bench.DefaultScopedConfig()
	cfg.Store = filepath.Join(t.TempDir(), "bench.db")
	cfg.Devices, cfg.Shape, cfg.Pages, cfg.NaivePages, cfg.SmallPages, cfg.SearchPages = 3000, []int{2, 3, 5}, 12, 2, 3, 10
	res, err := bench.RunScoped(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	small, search := 0, 0
	searches := map[string]bool{}
	for _, sq := range bench.SearchQueries {
		searches[sq.Name] = true
	}
	for _, r := range res {
		if searches[r.Query] {
			// herd's pages, the trigram index's and the baseline's, over the
			// top level's first node.
			search++
			if want := map[string]int{"pages": cfg.SearchPages, "index": 5, "naive": 5}[r.Method]; r.Scope != 1500 || r.Samples != want {
				t.Fatalf("search row %s %s: scope %d, %d samples, want 1500 and %d", r.Query, r.Method, r.Scope, r.Samples, want)
			}
			continue
		}
		if r.Method == "small" {
			small++
			if r.Scope != 100 || r.Samples != cfg.SmallPages {
				t.Fatalf("small-scope row %s limit %d: scope %d, %d samples", r.Query, r.Limit, r.Scope, r.Samples)
			}
		}
	}
	if want := 2 * len(bench.SmallScopeLimits); small != want {
		t.Fatalf("%d small-scope rows, want %d", small, want)
	}
	if want := 3 * len(bench.SearchQueries); search != want {
		t.Fatalf("%d search rows, want %d", search, want)
	}
	if want := len(cfg.Shape)*len(bench.ScopedQueries)*4 + small + search; len(res) != want {
		t.Fatalf("%d results, want %d", len(res), want)
	}
	scopes := map[int64]bool{}
	for _, r := range res {
		if r.Method == "small" || searches[r.Query] {
			continue
		}
		scopes[r.Scope] = true
		if r.Method == "pages" && r.Samples != cfg.Pages {
			t.Fatalf("%s at %d: %d samples, want %d", r.Query, r.Scope, r.Samples, cfg.Pages)
		}
	}
	for _, want := range []int64{1500, 500, 100} { // 3000 devices in a 2x3x5 tree
		if !scopes[want] {
			t.Fatalf("no scope of %d devices among %v", want, scopes)
		}
	}
	// A second run finds the fleet and reuses it.
	if _, err := bench.RunScoped(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	md := bench.ScopedMarkdown(res)
	if !strings.Contains(md, "| sqlite | temp>30 battery<20 by name | 1500 |") || !strings.Contains(md, "| sqlite | 100 | last zone by id | 1 |") {
		t.Fatalf("markdown lacks a row:\n%s", md)
	}
}
