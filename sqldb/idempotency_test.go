package sqldb_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// begin is BeginRequest that fails the test on an error.
func begin(t *testing.T, s *sqldb.IdempotencyService, key, hash string) herd.IdempotencyResult {
	t.Helper()
	r, err := s.BeginRequest(testutil.SuperContext(), "scope", key, hash)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestIdempotencyKeys: the claim, a second request while it is open,
// another body, the replay, a released claim, and the 24 h.
func TestIdempotencyKeys(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		now := time.UnixMilli(1_800_000_000_000).UTC()
		db.Now = func() time.Time { return now }
		s := sqldb.NewIdempotencyService(db)
		first := begin(t, s, "key", "a")
		if first.State != herd.IdempotencyNew || first.Claim == nil {
			t.Fatalf("first: %+v", first)
		}
		if st := begin(t, s, "key", "a").State; st != herd.IdempotencyRunning {
			t.Fatalf("while running: %s", st)
		}
		// Another key is another claim, beside the first (on SQLite the
		// first holds the writer: this one waits for it).
		type begun struct {
			r   herd.IdempotencyResult
			err error
		}
		other := make(chan begun, 1) // buffered: a test that fails first leaves no goroutine stuck
		go func() {
			r, err := s.BeginRequest(testutil.SuperContext(), "scope", "other", "x")
			other <- begun{r, err}
		}()
		if err := first.Claim.Complete(201, []byte(`{"id":"1"}`)); err != nil {
			t.Fatal(err)
		}
		o := <-other
		if o.err != nil || o.r.State != herd.IdempotencyNew {
			t.Fatalf("another key: %+v, %v", o.r, o.err)
		}
		o.r.Claim.Release()
		if err := first.Claim.Complete(201, nil); err == nil {
			t.Fatal("a claim completed twice")
		}
		first.Claim.Release() // after Complete: nothing
		if r := begin(t, s, "key", "a"); r.State != herd.IdempotencyReplay || r.Status != 201 || string(r.Body) != `{"id":"1"}` {
			t.Fatalf("replay %+v", r)
		}
		if st := begin(t, s, "key", "b").State; st != herd.IdempotencyMismatch {
			t.Fatalf("another body: %s", st)
		}
		// A released claim leaves nothing: the retry runs at once.
		r := begin(t, s, "released", "a")
		r.Claim.Release()
		if r := begin(t, s, "released", "b"); r.State != herd.IdempotencyNew {
			t.Fatalf("after a release: %s", r.State)
		} else {
			r.Claim.Release()
		}
		now = now.Add(herd.IdempotencyKeyTTL)
		if r := begin(t, s, "key", "b"); r.State != herd.IdempotencyNew {
			t.Fatalf("after 24 h the key is free: %s", r.State)
		} else if err := r.Claim.Complete(200, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if n, err := db.PruneIdempotencyKeys(context.Background()); err != nil || n != 0 {
			t.Fatalf("pruned %d, %v", n, err)
		}
	})
}

// TestIdempotencyClaim_EffectsCommitWithAnswer: the services' writes made
// in a claim's context are not visible until the claim completes, and a
// released claim takes them back, events and all; a write that fails
// inside the claim is rolled back alone and the claim still completes.
func TestIdempotencyClaim_EffectsCommitWithAnswer(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		s := sqldb.NewIdempotencyService(db)
		ten := f.mustTenant(t, "claims")
		exists := func(id int64) bool {
			t.Helper()
			_, err := f.Nodes.FindNodeByID(f.super, id)
			if err != nil && herd.ErrorCode(err) != herd.ENOTFOUND {
				t.Fatal(err)
			}
			return err == nil
		}

		woken, stop := db.EventsCommitted()
		defer stop()
		r := begin(t, s, "kept", "a")
		ctx := r.Claim.Context(f.super)
		kept := &herd.Node{ParentID: ten.RootNodeID, Kind: "site", Name: "kept"}
		mustOK(t, f.Nodes.CreateNode(ctx, kept))
		// A second write in the same request, and one that fails: the
		// failed one's savepoint is rolled back, the claim goes on.
		second := &herd.Node{ParentID: kept.ID, Kind: "room", Name: "second"}
		mustOK(t, f.Nodes.CreateNode(ctx, second))
		wantCode(t, f.Nodes.CreateNode(ctx, &herd.Node{ParentID: 1 << 40, Kind: "room", Name: "nowhere"}), herd.ENOTFOUND)
		if exists(kept.ID) {
			t.Fatal("a claim's write is visible before the claim commits")
		}
		select {
		case <-woken:
			t.Fatal("the relay was woken for events not yet committed")
		default:
		}
		mustOK(t, r.Claim.Complete(201, []byte(`{}`)))
		select {
		case <-woken: // the events committed with the claim
		default:
			t.Fatal("the claim committed events without waking the relay")
		}
		if !exists(kept.ID) || !exists(second.ID) {
			t.Fatal("the claim's writes are not there after it committed")
		}
		if err := f.Nodes.CreateNode(ctx, &herd.Node{ParentID: ten.RootNodeID, Kind: "site", Name: "late"}); err == nil {
			t.Fatal("a write joined a claim that had committed")
		}

		evs := func() int {
			t.Helper()
			list, err := sqldb.NewOutboxService(db).OutboxEvents(context.Background(), ten.ID, 0, 1<<20)
			mustOK(t, err)
			return len(list)
		}
		before := evs()
		r = begin(t, s, "dropped", "a")
		dropped := &herd.Node{ParentID: ten.RootNodeID, Kind: "site", Name: "dropped"}
		mustOK(t, f.Nodes.CreateNode(r.Claim.Context(f.super), dropped))
		r.Claim.Release()
		if exists(dropped.ID) || evs() != before {
			t.Fatal("a released claim left its write or its event")
		}
		if err := f.Nodes.CreateNode(r.Claim.Context(f.super), &herd.Node{ParentID: ten.RootNodeID, Kind: "site", Name: "late"}); err == nil {
			t.Fatal("a write joined a claim that had ended")
		}
	})
}

// TestIdempotencyClaim_OtherProcess: on PostgreSQL a second process (a
// second pool) sees a live claim as running without waiting for it, and
// takes the key at once when the first process's connection is gone.
func TestIdempotencyClaim_OtherProcess(t *testing.T) {
	t.Parallel()
	dsn := testutil.PostgresSchemaDSN(t)
	open := func(app string) *sqldb.DB {
		db := sqldb.NewDB(dsn + "&application_name=" + app)
		if err := db.Open(); err != nil {
			t.Fatal(err)
		}
		return db
	}
	app := fmt.Sprintf("herd_claim_test_%d", time.Now().UnixNano())
	one, two := open(app), open("herd_claim_test_two")
	defer two.Close()
	r := begin(t, sqldb.NewIdempotencyService(one), "key", "a")
	if st := begin(t, sqldb.NewIdempotencyService(two), "key", "a").State; st != herd.IdempotencyRunning {
		t.Fatalf("beside a live claim of another process: %s", st)
	}
	// The first process dies: its connection ends under the open claim.
	var killed bool
	mustOK(t, two.SQL().QueryRow(`SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle in transaction'`, app).Scan(&killed))
	if !killed {
		t.Fatal("the claim's backend did not end")
	}
	got := begin(t, sqldb.NewIdempotencyService(two), "key", "a")
	if got.State != herd.IdempotencyNew {
		t.Fatalf("the key is %s after its claimant's connection ended, want new at once", got.State)
	}
	got.Claim.Release()
	r.Claim.Release()
	one.Close()
}

// TestIdempotencyClaim_StoresApart: two stores in one PostgreSQL database
// (two schemas) share its advisory locks; a key claimed in one is still
// free in the other.
func TestIdempotencyClaim_StoresApart(t *testing.T) {
	t.Parallel()
	one := testutil.MustOpenDB(t, sqldb.Postgres)
	two := testutil.MustOpenDB(t, sqldb.Postgres)
	a := begin(t, sqldb.NewIdempotencyService(one), "apart", "a")
	defer a.Claim.Release()
	if b := begin(t, sqldb.NewIdempotencyService(two), "apart", "a"); b.State != herd.IdempotencyNew {
		t.Fatalf("the same key in another store: %s", b.State)
	} else {
		b.Claim.Release()
	}
}

// TestIdempotencyKeys_TenantsApart: the tenant is part of a key's identity
// in the store itself, not only of the scope string the API builds: two
// tenants' actors with the same scope and key each get a claim of their
// own, neither sees the other's running claim or replays its answer, and
// a caller with no actor is refused.
func TestIdempotencyKeys_TenantsApart(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		s := sqldb.NewIdempotencyService(db)
		as := func(tenant int64) context.Context {
			return herd.NewContextWithActor(context.Background(), &herd.Actor{TenantID: tenant, UserID: 1, TokenID: 1})
		}
		one, err := s.BeginRequest(as(1), "scope", "shared", "a")
		if err != nil || one.State != herd.IdempotencyNew {
			t.Fatalf("tenant 1: %+v, %v", one, err)
		}
		defer one.Claim.Release() // on a failure: an open claim would hold the test's schema
		if db.Dialect() == sqldb.Postgres {
			// On SQLite the open claim holds the one writer: a second
			// claim waits for it.
			two, err := s.BeginRequest(as(2), "scope", "shared", "a")
			if two.Claim != nil {
				two.Claim.Release()
			}
			if err != nil || two.State != herd.IdempotencyNew {
				t.Fatalf("tenant 2 beside tenant 1's open claim: %+v, %v", two, err)
			}
		}
		mustOK(t, one.Claim.Complete(201, []byte(`{"tenant":"1"}`)))
		for _, hash := range []string{"a", "b"} {
			r, err := s.BeginRequest(as(2), "scope", "shared", hash)
			if r.Claim != nil {
				r.Claim.Release()
			}
			if err != nil || r.State != herd.IdempotencyNew {
				t.Fatalf("tenant 2 after tenant 1's answer, hash %s: %+v, %v", hash, r, err)
			}
		}
		if r, err := s.BeginRequest(as(1), "scope", "shared", "a"); err != nil || r.State != herd.IdempotencyReplay || string(r.Body) != `{"tenant":"1"}` {
			t.Fatalf("tenant 1's replay: %+v, %v", r, err)
		}
		var tenant int64
		mustOK(t, db.SQL().QueryRow(db.Rebind(`SELECT tenant_id FROM idempotency_keys WHERE scope = ? AND key = ?`), "scope", "shared").Scan(&tenant))
		if tenant != 1 {
			t.Fatalf("the row is tenant %d's, want 1", tenant)
		}
		if _, err := s.BeginRequest(context.Background(), "scope", "shared", "a"); herd.ErrorCode(err) != herd.EUNAUTHORIZED {
			t.Fatalf("without an actor: %v", err)
		}
	})
}

// TestIdempotencyClaim_LockNamesApart: a scope and a key may both hold '/';
// on PostgreSQL claims of ("s/a", "b") and ("s", "a/b"), here from two
// services as from two processes, are two advisory locks, not one.
func TestIdempotencyClaim_LockNamesApart(t *testing.T) {
	t.Parallel()
	db := testutil.MustOpenDB(t, sqldb.Postgres)
	ctx := testutil.SuperContext()
	one, err := sqldb.NewIdempotencyService(db).BeginRequest(ctx, "s/a", "b", "x")
	if err != nil || one.State != herd.IdempotencyNew {
		t.Fatalf("first: %+v, %v", one, err)
	}
	defer one.Claim.Release()
	two, err := sqldb.NewIdempotencyService(db).BeginRequest(ctx, "s", "a/b", "x")
	if two.Claim != nil {
		two.Claim.Release()
	}
	if err != nil || two.State != herd.IdempotencyNew {
		t.Fatalf("second: %+v, %v", two, err)
	}
}
