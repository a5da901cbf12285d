package bench

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/herd-iot/herd/idguard"
)

// DoctorConfig configures the id doctor's benchmarks on the databases
// named by MySQL (a mysql:// DSN whose user may create databases) and
// Postgres (a URL whose search_path is a herd_ schema, dropped and made
// again).
type DoctorConfig struct {
	MySQL, Postgres string
	Tables          int   // for the scan
	Rows            int64 // for the copy
	Out             io.Writer
}

// DoctorResult is one engine's figures.
type DoctorResult struct {
	Engine              string
	Tables              int
	Scan                time.Duration
	Rows                int64
	CopyRate            float64 // rows a second, unthrottled
	InsertP99Idle       time.Duration
	InsertP99DuringCopy time.Duration
}

// RunDoctor runs the scan and copy benchmarks on each engine given.
func RunDoctor(ctx context.Context, cfg DoctorConfig) ([]DoctorResult, error) {
	var out []DoctorResult
	for _, e := range []struct{ name, dsn string }{{"mariadb", cfg.MySQL}, {"postgres", cfg.Postgres}} {
		if e.dsn == "" {
			continue
		}
		r, err := doctorCell(ctx, cfg, e.name, e.dsn)
		if err != nil {
			return out, fmt.Errorf("%s: %w", e.name, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func doctorCell(ctx context.Context, cfg DoctorConfig, engine, dsn string) (DoctorResult, error) {
	res := DoctorResult{Engine: engine, Tables: cfg.Tables, Rows: cfg.Rows}
	dsn, cleanup, err := freshDatabase(ctx, engine, dsn)
	if err != nil {
		return res, err
	}
	defer cleanup()
	db, d, err := idguard.Open(dsn)
	if err != nil {
		return res, err
	}
	defer db.Close()
	db.SetMaxOpenConns(8)

	fmt.Fprintf(cfg.Out, "doctor %s: creating %d tables\n", engine, cfg.Tables)
	idType := "INT NOT NULL AUTO_INCREMENT PRIMARY KEY"
	if d == idguard.Postgres {
		idType = "serial PRIMARY KEY"
	}
	for i := range cfg.Tables {
		if _, err := db.ExecContext(ctx, fmt.Sprintf(`CREATE TABLE t%04d (id %s, v INT)`, i, idType)); err != nil {
			return res, err
		}
	}
	start := time.Now()
	cols, err := idguard.Scan(ctx, db, d, nil)
	if err != nil {
		return res, err
	}
	res.Scan = time.Since(start)
	if len(cols) != cfg.Tables {
		return res, fmt.Errorf("the scan found %d id columns in %d tables", len(cols), cfg.Tables)
	}
	fmt.Fprintf(cfg.Out, "doctor %s: scanned %d tables in %s\n", engine, len(cols), res.Scan.Round(time.Millisecond))

	// The copy: a large table swapped, then copied back unthrottled while
	// a writer inserts; its insert p99 beside the same writer's alone.
	fmt.Fprintf(cfg.Out, "doctor %s: filling a table of %d rows\n", engine, cfg.Rows)
	if d == idguard.Postgres {
		if _, err := db.ExecContext(ctx, fmt.Sprintf(`CREATE TABLE big (id serial PRIMARY KEY, v bigint NOT NULL); INSERT INTO big (v) SELECT g FROM generate_series(1, %d) g`, cfg.Rows)); err != nil {
			return res, err
		}
	} else {
		if _, err := db.ExecContext(ctx, `CREATE TABLE big (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, v BIGINT NOT NULL)`); err != nil {
			return res, err
		}
		if _, err := db.ExecContext(ctx, fmt.Sprintf(`INSERT INTO big (v) SELECT seq FROM seq_1_to_%d`, cfg.Rows)); err != nil {
			return res, err
		}
	}
	ph := "?"
	if d == idguard.Postgres {
		ph = "$1"
	}
	writer := func(stop <-chan struct{}) []time.Duration {
		var lat []time.Duration
		for i := int64(0); ; i++ {
			select {
			case <-stop:
				return lat
			default:
			}
			t0 := time.Now()
			if _, err := db.ExecContext(ctx, `INSERT INTO big (v) VALUES (`+ph+`)`, -i); err == nil {
				lat = append(lat, time.Since(t0))
			}
			time.Sleep(2 * time.Millisecond) // a steady writer, not a flood
		}
	}
	p99 := func(l []time.Duration) time.Duration {
		if len(l) == 0 {
			return 0
		}
		slices.Sort(l)
		return percentile(l, 0.99)
	}
	stop := make(chan struct{})
	var idle []time.Duration
	var wg sync.WaitGroup
	wg.Go(func() { idle = writer(stop) })
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	res.InsertP99Idle = p99(idle)

	p, err := idguard.PlanWiden(ctx, db, d, "big", "id", 1000)
	if err != nil {
		return res, err
	}
	if err := idguard.Execute(ctx, db, p); err != nil {
		return res, err
	}
	stop = make(chan struct{})
	var during []time.Duration
	wg.Go(func() { during = writer(stop) })
	start = time.Now()
	err = idguard.Copy(ctx, db, p, 1000, 0, nil)
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		return res, err
	}
	res.CopyRate = float64(cfg.Rows) / elapsed.Seconds()
	res.InsertP99DuringCopy = p99(during)
	old, found, err := idguard.Verify(ctx, db, p)
	if err != nil || old != found {
		return res, fmt.Errorf("verify: %d of %d, %v", found, old, err)
	}
	fmt.Fprintf(cfg.Out, "doctor %s: copied %d rows in %s: %.0f rows/s; insert p99 %s alone, %s during the copy\n",
		engine, cfg.Rows, elapsed.Round(time.Millisecond), res.CopyRate, fmtDur(res.InsertP99Idle), fmtDur(res.InsertP99DuringCopy))
	return res, nil
}

// freshDatabase makes an empty database (MariaDB) or schema (PostgreSQL)
// for the run and returns its DSN and what drops it.
func freshDatabase(ctx context.Context, engine, dsn string) (string, func(), error) {
	if engine == "postgres" {
		dsn, _, err := freshStore(ctx, dsn, "", "doctor")
		if err != nil {
			return "", nil, err
		}
		// Dropped table by table in batches: one DROP SCHEMA of thousands
		// of tables runs out of PostgreSQL's lock table.
		return dsn, func() { dropTables(dsn) }, nil
	}
	admin, _, err := idguard.Open(dsn)
	if err != nil {
		return "", nil, err
	}
	name := fmt.Sprintf("herd_bench_doctor_%d", time.Now().UnixNano())
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		return "", nil, err
	}
	u, err := url.Parse(dsn)
	if err != nil {
		admin.Close()
		return "", nil, err
	}
	u.Path = "/" + name
	return u.String(), func() {
		admin.ExecContext(context.Background(), "DROP DATABASE "+name)
		admin.Close()
	}, nil
}

// DoctorMarkdown formats the results.
func DoctorMarkdown(rs []DoctorResult) string {
	var b strings.Builder
	b.WriteString("| engine | tables | scan | rows copied | copy rows/s (unthrottled) | insert p99 alone | insert p99 during the copy |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %d | %s | %d | %.0f | %s | %s |\n", r.Engine, r.Tables, r.Scan.Round(time.Millisecond), r.Rows, r.CopyRate, fmtDur(r.InsertP99Idle), fmtDur(r.InsertP99DuringCopy))
	}
	return b.String()
}

// dropTables empties a PostgreSQL schema in transactions of 200 tables.
func dropTables(dsn string) {
	db, _, err := idguard.Open(dsn)
	if err != nil {
		return
	}
	defer db.Close()
	for {
		rows, err := db.Query(`SELECT tablename FROM pg_tables WHERE schemaname = current_schema() LIMIT 200`)
		if err != nil {
			return
		}
		var names []string
		for rows.Next() {
			var n string
			if rows.Scan(&n) == nil {
				names = append(names, `"`+strings.ReplaceAll(n, `"`, `""`)+`"`)
			}
		}
		rows.Close()
		if len(names) == 0 {
			return
		}
		if _, err := db.Exec(`DROP TABLE IF EXISTS ` + strings.Join(names, ", ") + ` CASCADE`); err != nil {
			return
		}
	}
}
