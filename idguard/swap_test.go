package idguard_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-iot/herd/idguard"
	"github.com/herd-iot/herd/internal/testutil"
)

// swapTable makes a table of rows rows whose widening is a swap (the plan
// is made with maxAlterRows 10), on MariaDB or PostgreSQL.
func swapTable(t *testing.T, engine string) (*sql.DB, idguard.Dialect) {
	t.Helper()
	var dsn string
	if engine == "mysql" {
		dsn, _ = testutil.MySQLDatabase(t)
	} else {
		dsn = testutil.PostgresSchemaDSN(t)
	}
	db, d, err := idguard.Open(dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if d == idguard.MySQL {
		exec(t, db, `CREATE TABLE events (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, v BIGINT NOT NULL) AUTO_INCREMENT=2147000000`,
			`INSERT INTO events (v) SELECT seq FROM seq_1_to_50`)
	} else {
		exec(t, db, `CREATE TABLE events (id serial PRIMARY KEY, v bigint NOT NULL)`, `SELECT setval('events_id_seq', 2147000000)`,
			`INSERT INTO events (v) SELECT g FROM generate_series(1, 50) g`)
	}
	return db, d
}

// holdOpen begins a transaction that reads the table and keeps it open
// (its metadata lock on MySQL, its ACCESS SHARE lock on PostgreSQL) until
// the returned func ends it; it also returns the session's id.
func holdOpen(t *testing.T, db *sql.DB, d idguard.Dialect) (end func(), session int64) {
	t.Helper()
	tx, err := db.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	q := `SELECT CONNECTION_ID()`
	if d == idguard.Postgres {
		q = `SELECT pg_backend_pid()`
	}
	if err := tx.QueryRow(q).Scan(&session); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := tx.QueryRow(`SELECT COUNT(*) FROM events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	end = func() { once.Do(func() { tx.Rollback() }) }
	t.Cleanup(end)
	return end, session
}

// lockWaiter returns the session waiting for a lock on events behind
// holder, with a statement starting with prefix, or 0.
func lockWaiter(t *testing.T, db *sql.DB, d idguard.Dialect, holder int64, prefix string) int64 {
	t.Helper()
	var id int64
	var err error
	if d == idguard.MySQL {
		err = db.QueryRow(`SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND INFO LIKE ? AND STATE LIKE 'Waiting for table metadata lock%' LIMIT 1`, prefix+"%").Scan(&id)
	} else {
		err = db.QueryRow(`SELECT pid FROM pg_stat_activity WHERE query LIKE $1 AND $2 = ANY (pg_blocking_pids(pid)) LIMIT 1`, prefix+"%", holder).Scan(&id)
	}
	if err == sql.ErrNoRows {
		return 0
	} else if err != nil {
		t.Fatal(err)
	}
	return id
}

func scanDB(t *testing.T, db *sql.DB, d idguard.Dialect) map[string]idguard.Column {
	t.Helper()
	cols, err := idguard.Scan(context.Background(), db, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]idguard.Column{}
	for _, c := range cols {
		out[c.Key()] = c
	}
	return out
}

// writer inserts into events until stopped, and says how long the
// longest insert took, counting one still waiting.
type writer struct {
	longest  atomic.Int64 // nanoseconds
	inFlight atomic.Int64 // the start of the insert under way, unix nanoseconds, or 0
	failures atomic.Int64
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startWriter(t *testing.T, db *sql.DB, d idguard.Dialect) *writer {
	w := &writer{stop: make(chan struct{})}
	ph := "?"
	if d == idguard.Postgres {
		ph = "$1"
	}
	w.wg.Go(func() {
		for i := 1_000_000; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			start := time.Now()
			w.inFlight.Store(start.UnixNano())
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			_, err := db.ExecContext(ctx, `INSERT INTO events (v) VALUES (`+ph+`)`, i)
			cancel()
			w.inFlight.Store(0)
			if err != nil {
				w.failures.Add(1)
			}
			if took := int64(time.Since(start)); took > w.longest.Load() {
				w.longest.Store(took)
			}
		}
	})
	t.Cleanup(w.close)
	return w
}

// worst is the longest insert so far, the one under way included.
func (w *writer) worst() time.Duration {
	worst := time.Duration(w.longest.Load())
	if s := w.inFlight.Load(); s != 0 {
		worst = max(worst, time.Since(time.Unix(0, s)))
	}
	return worst
}

func (w *writer) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
}

// TestSwap_LockTimeout: a long transaction holds the table open. The
// swap's rename (MySQL) or LOCK TABLE (PostgreSQL), and a small table's
// ALTER, wait a short while each try, so a concurrent writer is never held
// up for longer than that; they give up after their tries with a clear
// error and leave nothing behind, and succeed once the long transaction
// ends.
func TestSwap_LockTimeout(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		engine   string
		maxAlter int64
	}{{"mysql", 10}, {"postgres", 10}, {"mysql", idguard.DefaultMaxAlterRows}, {"postgres", idguard.DefaultMaxAlterRows}} {
		swap := tt.maxAlter == 10
		name := tt.engine + "-alter"
		if swap {
			name = tt.engine + "-swap"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			db, d := swapTable(t, tt.engine)
			ctx := context.Background()
			end, holder := holdOpen(t, db, d)
			w := startWriter(t, db, d)
			p, err := idguard.PlanWiden(ctx, db, d, "events", "id", tt.maxAlter)
			if err != nil || p.Swap != swap {
				t.Fatalf("plan %v: %v", p, err)
			}
			p.LockTimeout, p.LockTries = time.Second, 3
			// Without a lock timeout the swap would wait a day: the test
			// gives it a minute.
			sctx, cancel := context.WithTimeout(ctx, time.Minute)
			err = idguard.Execute(sctx, db, p)
			cancel()
			if err == nil || !strings.Contains(err.Error(), "3 times") || !strings.Contains(err.Error(), "long transaction") {
				t.Fatalf("the swap behind a long transaction: %v", err)
			}
			// Each try holds writers up for its timeout at most (1 s); the
			// bound leaves room for a slow machine, and is far from the
			// server's day.
			if worst := w.worst(); worst > 10*time.Second {
				t.Fatalf("a writer waited %s behind the swap", worst)
			}
			// Nothing is left behind: the column is as it was, and the plan
			// can be made and run again.
			if c := scanDB(t, db, d)["events.id"]; c.Max != 1<<31-1 {
				t.Fatalf("after giving up: %+v", c)
			}
			if pending, err := idguard.PendingCopy(ctx, db, d, "events"); pending != nil || err != nil {
				t.Fatalf("after giving up: pending %+v, %v", pending, err)
			}
			p, err = idguard.PlanWiden(ctx, db, d, "events", "id", tt.maxAlter)
			if err != nil {
				t.Fatalf("plan after giving up: %v", err)
			}
			p.LockTimeout, p.LockTries = time.Second, 100
			done := make(chan error, 1)
			go func() { done <- idguard.Execute(ctx, db, p) }()
			waits := "ALTER TABLE"
			switch {
			case swap && d == idguard.MySQL:
				waits = "RENAME TABLE"
			case swap:
				waits = "LOCK TABLE"
			}
			testutil.WaitFor(t, 30*time.Second, "the swap to wait behind the long transaction", func() bool {
				return lockWaiter(t, db, d, holder, waits) != 0
			})
			end()
			if err := <-done; err != nil {
				t.Fatalf("the swap once the long transaction ended: %v", err)
			}
			w.close()
			if f := w.failures.Load(); f != 0 {
				t.Fatalf("the writer failed %d times", f)
			}
			if !swap {
				if c := scanDB(t, db, d)["events.id"]; c.Max != 1<<63-1 {
					t.Fatalf("after the ALTER: %+v", c)
				}
				return
			}
			if err := idguard.Copy(ctx, db, p, 100, 0, nil); err != nil {
				t.Fatal(err)
			}
			if old, found, err := idguard.Verify(ctx, db, p); err != nil || old != found {
				t.Fatalf("verify: %d old, %d found, %v", old, found, err)
			}
		})
	}
}

// TestSwap_Interrupted: a MySQL swap whose connection dies while its
// rename waits leaves its checkpoint and the new table; the copy is not
// "pending", and UndoInterruptedSwap takes it back so that the widening
// runs again from the start.
func TestSwap_Interrupted(t *testing.T) {
	t.Parallel()
	db, d := swapTable(t, "mysql")
	ctx := context.Background()
	end, holder := holdOpen(t, db, d)
	p, err := idguard.PlanWiden(ctx, db, d, "events", "id", 10)
	if err != nil {
		t.Fatal(err)
	}
	p.LockTimeout, p.LockTries = 30*time.Second, 1
	done := make(chan error, 1)
	go func() { done <- idguard.Execute(ctx, db, p) }()
	var swap int64
	testutil.WaitFor(t, 30*time.Second, "the rename to wait", func() bool {
		swap = lockWaiter(t, db, d, holder, "RENAME TABLE")
		return swap != 0
	})
	exec(t, db, fmt.Sprintf(`KILL %d`, swap)) // the connection, as a crash or a network cut would
	if err := <-done; err == nil {
		t.Fatal("the killed swap succeeded")
	}
	// MariaDB shuts a killed connection's socket at once, so the client
	// sees EOF while the server's thread may still be waiting for the
	// lock: ended now, the holder would let that thread's rename through
	// (a swap past its rename, whose copy is resumed; not the case here).
	// The thread is gone once the processlist no longer shows it.
	testutil.WaitFor(t, 30*time.Second, "the killed session to end", func() bool {
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?`, swap).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
	end()
	// The killed connection went back to the pool idle, and the next
	// statement on it would fail with "unexpected EOF": dropping the idle
	// connections leaves only live ones.
	db.SetMaxIdleConns(0)
	db.SetMaxIdleConns(2)
	var left int
	if err := db.QueryRow(`SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'events_new'`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 1 {
		t.Fatalf("the killed swap left %d events_new tables: the test needs it to leave one", left)
	}
	if pending, err := idguard.PendingCopy(ctx, db, d, "events"); pending != nil || err == nil || !strings.Contains(err.Error(), "before its rename") {
		t.Fatalf("a swap stopped before its rename is pending: %+v, %v", pending, err)
	}
	if undone, err := idguard.UndoInterruptedSwap(ctx, db, d, "events"); !undone || err != nil {
		t.Fatalf("undo: %v, %v", undone, err)
	}
	if undone, err := idguard.UndoInterruptedSwap(ctx, db, d, "events"); undone || err != nil {
		t.Fatalf("a second undo: %v, %v", undone, err)
	}
	p, err = idguard.PlanWiden(ctx, db, d, "events", "id", 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := idguard.Execute(ctx, db, p); err != nil {
		t.Fatal(err)
	}
	if err := idguard.Copy(ctx, db, p, 100, 0, nil); err != nil {
		t.Fatal(err)
	}
	if old, found, err := idguard.Verify(ctx, db, p); err != nil || old != 50 || found != 50 {
		t.Fatalf("verify: %d old, %d found, %v", old, found, err)
	}
}
