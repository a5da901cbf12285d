package sqldb_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

func TestOutbox_Leases(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		now := time.UnixMilli(1_800_000_000_000).UTC()
		db.Now = func() time.Time { return now }
		f := newFixture(db)
		t1, t2 := f.mustTenant(t, "one"), f.mustTenant(t, "two")
		out := sqldb.NewOutboxService(db)

		st, err := out.OutboxStats(ctx)
		if err != nil || st.Pending != 4 || !st.Oldest.Equal(now) {
			t.Fatalf("stats %+v, %v; want 4 pending since %v", st, err, now)
		}
		a, err := out.ClaimOutbox(ctx, "a", time.Second, 1)
		if err != nil || len(a) != 1 || a[0] != (herd.OutboxClaim{TenantID: t1.ID}) {
			t.Fatalf("a claimed %+v, %v; want tenant %d from 0", a, err, t1.ID)
		}
		b, err := out.ClaimOutbox(ctx, "b", time.Second, 10)
		if err != nil || len(b) != 1 || b[0].TenantID != t2.ID {
			t.Fatalf("b claimed %+v, %v; want only tenant %d", b, err, t2.ID)
		}
		// Another's lease holds until it runs out.
		if err := out.MarkPublished(ctx, "b", t1.ID, 2, time.Second); !errors.Is(err, herd.ErrLeaseLost) {
			t.Fatalf("b marked a's tenant: %v", err)
		}
		if err := out.MarkPublished(ctx, "a", t1.ID, 2, time.Second); err != nil {
			t.Fatal(err)
		}
		// A tenant with nothing left is not claimed.
		if c, _ := out.ClaimOutbox(ctx, "c", time.Second, 10); len(c) != 0 {
			t.Fatalf("c claimed %+v while b holds the only pending tenant", c)
		}
		now = now.Add(2 * time.Second) // b's lease ran out
		if c, _ := out.ClaimOutbox(ctx, "c", time.Second, 10); len(c) != 1 || c[0].TenantID != t2.ID {
			t.Fatalf("c claimed %+v; want b's expired tenant %d", c, t2.ID)
		}
		if err := out.MarkPublished(ctx, "b", t2.ID, 2, time.Second); !errors.Is(err, herd.ErrLeaseLost) {
			t.Fatalf("b marked after losing its lease: %v", err)
		}
		if err := out.ReleaseOutbox(ctx, "c"); err != nil {
			t.Fatal(err)
		}
		if a, _ := out.ClaimOutbox(ctx, "a", time.Second, 10); len(a) != 1 || a[0].TenantID != t2.ID {
			t.Fatalf("a claimed %+v after c released; want %d", a, t2.ID)
		}
		st, _ = out.OutboxStats(ctx)
		if st.Pending != 2 {
			t.Fatalf("pending %d, want 2", st.Pending)
		}
		evs, err := out.OutboxEvents(ctx, t2.ID, 0, 10)
		if err != nil || len(evs) != 2 || evs[0].Seq != 1 || evs[1].Type != herd.EventNodeCreated {
			t.Fatalf("events %v, %v", evs, err)
		}
	})
}

// TestApplyOnce_Concurrent: one event handed to a consumer many times at
// once is applied once.
func TestApplyOnce_Concurrent(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		if _, err := db.SQL().Exec(`CREATE TABLE effects (event_id BIGINT NOT NULL)`); err != nil {
			t.Fatal(err)
		}
		const n = 16
		var wg sync.WaitGroup
		results := make(chan bool, n)
		start := make(chan struct{})
		for range n {
			wg.Go(func() {
				<-start
				applied, err := db.ApplyOnce(context.Background(), "c", 42, func(ctx context.Context, tx *sqldb.Tx) error {
					_, err := tx.ExecContext(ctx, `INSERT INTO effects (event_id) VALUES (?)`, 42)
					return err
				})
				if err != nil {
					t.Error(err)
				}
				results <- applied
			})
		}
		close(start)
		wg.Wait()
		close(results)
		applied := 0
		for a := range results {
			if a {
				applied++
			}
		}
		var rows int
		db.SQL().QueryRow(`SELECT COUNT(*) FROM effects`).Scan(&rows)
		if applied != 1 || rows != 1 {
			t.Fatalf("applied %d times, %d effect rows; want 1 and 1", applied, rows)
		}
		// Another consumer has its own record; a failed effect leaves none.
		boom := errors.New("boom")
		if _, err := db.ApplyOnce(context.Background(), "d", 42, func(context.Context, *sqldb.Tx) error { return boom }); !errors.Is(err, boom) {
			t.Fatalf("failed effect: %v", err)
		}
		if applied, err := db.ApplyOnce(context.Background(), "d", 42, nil); err != nil || !applied {
			t.Fatalf("after a failed effect the event is new again: applied %v, %v", applied, err)
		}
	})
}

// TestPruneProcessed: records older than the cut are forgotten (the event
// would be new again), younger ones kept.
func TestPruneProcessed(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		now := time.UnixMilli(1_800_000_000_000).UTC()
		db.Now = func() time.Time { return now }
		db.ApplyOnce(ctx, "c", 1, nil)
		now = now.Add(time.Hour)
		db.ApplyOnce(ctx, "c", 2, nil)
		n, err := db.PruneProcessed(ctx, now.Add(-time.Minute))
		if err != nil || n != 1 {
			t.Fatalf("pruned %d, %v; want 1", n, err)
		}
		for id, wantNew := range map[int64]bool{1: true, 2: false} {
			if applied, err := db.ApplyOnce(ctx, "c", id, nil); err != nil || applied != wantNew {
				t.Fatalf("event %d applied %v, %v; want %v", id, applied, err, wantNew)
			}
		}
	})
}

// TestOutbox_ClaimIsFair: a relay's busy tenant, renewed by its marks, does
// not keep a tenant nobody holds out of the relay's claims.
func TestOutbox_ClaimIsFair(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		f := newFixture(db)
		t1, t2 := f.mustTenant(t, "busy"), f.mustTenant(t, "waiting")
		out := sqldb.NewOutboxService(db)
		c, err := out.ClaimOutbox(ctx, "a", time.Minute, 1)
		if err != nil || len(c) != 1 || c[0].TenantID != t1.ID {
			t.Fatalf("first claim %+v, %v", c, err)
		}
		if err := out.MarkPublished(ctx, "a", t1.ID, 1, time.Minute); err != nil { // still one pending
			t.Fatal(err)
		}
		c, err = out.ClaimOutbox(ctx, "a", time.Minute, 1)
		if err != nil || len(c) != 1 || c[0].TenantID != t2.ID {
			t.Fatalf("second claim %+v, %v; want the tenant nobody held, %d", c, err, t2.ID)
		}
	})
}

// TestIDSamples: readings of herd's own ids are kept, the oldest of a
// window found per column, and those past a month forgotten.
func TestIDSamples(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		now := time.UnixMilli(1_800_000_000_000).UTC()
		db.Now = func() time.Time { return now }
		for i, used := range []int64{100, 200, 300} {
			at := now.Add(time.Duration(i-2) * 24 * time.Hour)
			if err := db.RecordIDSamples(ctx, []sqldb.IDSample{{Table: "nodes", Column: "id", At: at, Used: used}}); err != nil {
				t.Fatal(err)
			}
		}
		got, err := db.OldestIDSamples(ctx, now.Add(-36*time.Hour))
		if err != nil || len(got) != 1 || got[0].Used != 200 {
			t.Fatalf("oldest in the window: %+v, %v; want the reading of 200", got, err)
		}
		now = now.Add(31 * 24 * time.Hour)
		db.RecordIDSamples(ctx, nil)
		if got, _ := db.OldestIDSamples(ctx, time.Time{}); len(got) != 0 {
			t.Fatalf("after a month: %+v", got)
		}
	})
}
