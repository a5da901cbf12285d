package idguard_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/herd-iot/herd/idguard"
	"github.com/herd-iot/herd/internal/testutil"
)

// TestWiden_SmallMySQL: a table at the wall, with a child table pointing
// at it, is widened in place; the next insert gets 2147483648.
func TestWiden_SmallMySQL(t *testing.T) {
	t.Parallel()
	_, db := testutil.MySQLDatabase(t)
	exec(t, db,
		`CREATE TABLE events (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, v INT) AUTO_INCREMENT=2147483646`,
		`CREATE TABLE notes (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, event_id INT NOT NULL, FOREIGN KEY (event_id) REFERENCES events (id))`,
		`INSERT INTO events (v) VALUES (1), (2)`,
		`INSERT INTO notes (event_id) VALUES (2147483647)`,
	)
	if _, err := db.Exec(`INSERT INTO events (v) VALUES (3)`); err == nil {
		t.Fatal("the wall is not there")
	}
	p, err := idguard.PlanWiden(context.Background(), db, idguard.MySQL, "events", "", idguard.DefaultMaxAlterRows)
	if err != nil {
		t.Fatal(err)
	}
	if p.Swap || len(p.References) != 1 || p.References[0].Table != "notes" {
		t.Fatalf("plan %s", p)
	}
	if err := idguard.Execute(context.Background(), db, p); err != nil {
		t.Fatal(err)
	}
	res, err := db.Exec(`INSERT INTO events (v) VALUES (3)`)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := res.LastInsertId(); id != 2147483648 {
		t.Fatalf("next id %d, want 2147483648", id)
	}
	exec(t, db, `INSERT INTO notes (event_id) VALUES (2147483648)`)
}

// TestWiden_SmallPostgres: an integer serial at its limit, widened with its
// sequence and a referencing column.
func TestWiden_SmallPostgres(t *testing.T) {
	t.Parallel()
	db, _, err := idguard.Open(testutil.PostgresSchemaDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exec(t, db,
		`CREATE TABLE events (id serial PRIMARY KEY, v int)`,
		`CREATE TABLE notes (id bigserial PRIMARY KEY, event_id integer REFERENCES events (id))`,
		`SELECT setval('events_id_seq', 2147483646)`,
		`INSERT INTO events (v) VALUES (1)`,
	)
	if _, err := db.Exec(`INSERT INTO events (v) VALUES (2)`); err == nil {
		t.Fatal("the wall is not there")
	}
	p, err := idguard.PlanWiden(context.Background(), db, idguard.Postgres, "events", "id", idguard.DefaultMaxAlterRows)
	if err != nil {
		t.Fatal(err)
	}
	if p.Swap || len(p.References) != 1 {
		t.Fatalf("plan %s", p)
	}
	if err := idguard.Execute(context.Background(), db, p); err != nil {
		t.Fatal(err)
	}
	var id int64
	if err := db.QueryRow(`INSERT INTO events (v) VALUES (3) RETURNING id`).Scan(&id); err != nil || id <= 2147483647 {
		t.Fatalf("next id %d, %v; want past 2147483647", id, err)
	}
	exec(t, db, fmt.Sprintf(`INSERT INTO notes (event_id) VALUES (%d)`, id))
}

// TestWiden_LargeUnderLoad: a large table is swapped for a BIGINT one while
// a writer inserts all along; the copy is killed once and resumed. At the
// end no row is lost, no id repeats, the writer never missed the table, and
// its new rows got ids past 2^31-1.
func TestWiden_LargeUnderLoad(t *testing.T) {
	t.Parallel()
	for _, engine := range []string{"mysql", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
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
			defer db.Close()
			const rows = 20000
			if d == idguard.MySQL {
				exec(t, db, fmt.Sprintf(`CREATE TABLE events (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, v BIGINT NOT NULL) AUTO_INCREMENT=%d`, 2147483647-rows-100000),
					fmt.Sprintf(`INSERT INTO events (v) SELECT seq FROM seq_1_to_%d`, rows))
			} else {
				exec(t, db, `CREATE TABLE events (id serial PRIMARY KEY, v bigint NOT NULL)`,
					fmt.Sprintf(`SELECT setval('events_id_seq', %d)`, 2147483647-rows-100000),
					fmt.Sprintf(`INSERT INTO events (v) SELECT g FROM generate_series(1, %d) g`, rows))
			}
			ph := "?"
			if d == idguard.Postgres {
				ph = "$1"
			}
			// The writer: inserts until told to stop, counting what it
			// was told is stored and every failure.
			var stored, failed atomic.Int64
			var firstErr atomic.Value
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				for i := int64(1_000_000); ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := db.Exec(`INSERT INTO events (v) VALUES (`+ph+`)`, i); err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
						continue
					}
					stored.Add(1)
				}
			})
			ctx := context.Background()
			p, err := idguard.PlanWiden(ctx, db, d, "events", "id", 1000)
			if err != nil {
				t.Fatal(err)
			}
			if !p.Swap {
				t.Fatalf("plan %s: want a swap", p)
			}
			if err := idguard.Execute(ctx, db, p); err != nil {
				t.Fatal(err)
			}
			// The copy, killed after a few chunks, then resumed.
			kctx, kill := context.WithCancel(ctx)
			chunks := 0
			err = idguard.Copy(kctx, db, p, 1000, 0, func(copied, total int64) {
				if chunks++; chunks == 5 {
					kill()
				}
			})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("the killed copy: %v", err)
			}
			if err := idguard.Copy(ctx, db, p, 1000, 0, nil); err != nil {
				t.Fatal(err)
			}
			close(stop)
			wg.Wait()
			if f := failed.Load(); f != 0 {
				t.Fatalf("the writer failed %d times, first: %v", f, firstErr.Load())
			}
			old, found, err := idguard.Verify(ctx, db, p)
			if err != nil || old != found {
				t.Fatalf("verify: %d old rows, %d found, %v", old, found, err)
			}
			var n, distinct, fromWriter, low int64
			if err := db.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT id), COUNT(CASE WHEN v >= 1000000 THEN 1 END), COUNT(CASE WHEN v >= 1000000 AND id <= 2147483647 THEN 1 END) FROM events`).Scan(&n, &distinct, &fromWriter, &low); err != nil {
				t.Fatal(err)
			}
			var oldWriter int64
			db.QueryRow(`SELECT COUNT(*) FROM events_old WHERE v >= 1000000`).Scan(&oldWriter)
			if n != distinct {
				t.Fatalf("%d rows, %d distinct ids", n, distinct)
			}
			if n != rows+stored.Load() || fromWriter != stored.Load() {
				t.Fatalf("%d rows, %d from the writer; want %d and %d", n, fromWriter, rows+stored.Load(), stored.Load())
			}
			if low != oldWriter {
				t.Fatalf("%d of the writer's rows have ids below 2^31 but only %d went to the old table before the swap", low, oldWriter)
			}
			// Done with the old table: dropping it leaves the new one whole.
			exec(t, db, `DROP TABLE events_old`)
			if _, err := db.Exec(`INSERT INTO events (v) VALUES (`+ph+`)`, 1); err != nil {
				t.Fatalf("insert after dropping the old table: %v", err)
			}
			t.Logf("%s: %d rows copied, %d written during the swap and copy (%d before the rename)", engine, old, stored.Load(), oldWriter)
		})
	}
}
