package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd/internal/testutil"
)

// runDoctorCmd runs `herd doctor ids args…` in a child process.
func runDoctorCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := herdCommand(t, append([]string{"doctor", "ids"}, args...)...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	return exitCode(t, cmd.Run()), out.String(), errb.String()
}

// TestDoctorIDs_SearchPath: a PostgreSQL search_path naming a schema that
// does not exist, or one the user may not use, is exit 3 with a message,
// not "no columns" and 0.
func TestDoctorIDs_SearchPath(t *testing.T) {
	t.Parallel()
	dsn := testutil.PostgresSchemaDSN(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	schema := u.Query().Get("search_path")
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() }) // after the role's cleanup, which needs it
	if _, err := db.Exec(`CREATE TABLE events (id serial PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := runDoctorCmd(t, "--dsn", dsn); code != 0 || !strings.Contains(out, "events") {
		t.Fatalf("the schema itself: exit %d\n%s%s", code, out, errs)
	}
	role := schema + "_nousage"
	if _, err := db.Exec(`CREATE ROLE ` + role + ` LOGIN`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := db.Exec(`DROP ROLE ` + role); err != nil {
			t.Errorf("drop role %s: %v", role, err)
		}
	})
	missing := *u
	q := missing.Query()
	q.Set("search_path", schema+"_missing")
	missing.RawQuery = q.Encode()
	noUsage := *u
	noUsage.User = url.User(role)
	for name, bad := range map[string]string{"missing schema": missing.String(), "no USAGE": noUsage.String()} {
		code, out, errs := runDoctorCmd(t, "--dsn", bad)
		if code != 3 || !strings.Contains(errs, "search_path") || strings.Contains(out, "no auto-increment") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 3 and the search_path named", name, code, out, errs)
		}
	}
}

// TestDoctorIDs_PartialGrants: a MariaDB user granted one table of two
// sees only that one; the doctor says so and exits 3 instead of judging
// the database by it.
func TestDoctorIDs_PartialGrants(t *testing.T) {
	t.Parallel()
	dsn, db := testutil.MySQLDatabase(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	schema := strings.TrimPrefix(u.Path, "/")
	for _, q := range []string{
		`CREATE TABLE seen (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY)`,
		`CREATE TABLE full_one (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY) AUTO_INCREMENT=2147483600`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	user := "dp" + schema[len(schema)-12:]
	if _, err := db.Exec(`CREATE USER '` + user + `'@'%' IDENTIFIED BY 'pw'`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Exec(`DROP USER '` + user + `'@'%'`) })
	if _, err := db.Exec(`GRANT SELECT ON ` + schema + `.seen TO '` + user + `'@'%'`); err != nil {
		t.Fatal(err)
	}
	partial := strings.Replace(dsn, "mysql://root@", "mysql://"+user+":pw@", 1)
	code, out, errs := runDoctorCmd(t, "--dsn", partial)
	if code != 3 || !strings.Contains(errs, "only some tables") || !strings.Contains(errs, "seen") || !strings.Contains(errs, "GRANT SELECT ON") && !strings.Contains(errs, "grant SELECT ON") {
		t.Fatalf("partial grants: exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
	if _, err := db.Exec(`GRANT SELECT ON ` + schema + `.* TO '` + user + `'@'%'`); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := runDoctorCmd(t, "--dsn", partial); code != 2 || !strings.Contains(out, "full_one") {
		t.Fatalf("with SELECT on the database: exit %d\n%s%s", code, out, errs)
	}
}

// TestDoctorIDs_SQLiteDataDir: a herd data dir is read by its herd.db; a
// directory without one is exit 3 saying so. Off a terminal (stderr is a
// pipe here) no progress lines are printed.
func TestDoctorIDs_SQLiteDataDir(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "herd-data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "herd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := range 20 {
		if _, err := db.Exec(fmt.Sprintf(`CREATE TABLE t%02d (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT)`, i)); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errs := runDoctorCmd(t, "--dsn", dir)
	if code != 0 || !strings.Contains(out, "t19") {
		t.Fatalf("the data dir: exit %d\n%s%s", code, out, errs)
	}
	if errs != "" {
		t.Fatalf("off a terminal stderr got %q", errs)
	}
	// On a terminal (script(1) gives the child one) progress is drawn,
	// over itself, and cleared.
	if script, err := exec.LookPath("script"); err == nil {
		inner := herdCommand(t, "doctor", "ids", "--dsn", dir)
		quoted := make([]string, len(inner.Args))
		for i, a := range append([]string{inner.Path}, inner.Args[1:]...) {
			quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		cmd := exec.Command(script, "-qec", strings.Join(quoted, " "), "/dev/null")
		cmd.Env = inner.Env
		out, err := cmd.Output()
		if err != nil || !strings.Contains(string(out), "\rscanned 20 of 20 id columns") || !strings.Contains(string(out), "t19") {
			t.Fatalf("on a terminal: %v\n%q", err, out)
		}
	}
	empty := t.TempDir()
	if code, _, errs := runDoctorCmd(t, "--dsn", empty); code != 3 || !strings.Contains(errs, "herd.db") {
		t.Fatalf("a directory without herd.db: exit %d, %q", code, errs)
	}
}

// TestDoctorWiden_KilledBeforeRename: `herd doctor ids widen --execute`
// is SIGKILLed while its rename waits behind a long transaction, leaving
// its checkpoint and the empty new table. The next plan says what
// happened (not "resuming"), and the next --execute undoes it, swaps,
// copies and verifies.
func TestDoctorWiden_KilledBeforeRename(t *testing.T) {
	t.Parallel()
	dsn, db := testutil.MySQLDatabase(t)
	for _, q := range []string{
		`CREATE TABLE events (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL) AUTO_INCREMENT=2147000000`,
		`INSERT INTO events (v) SELECT seq FROM seq_1_to_50`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	widen := func(args ...string) (int, string, string) {
		return runDoctorCmd(t, append([]string{"widen", "--dsn", dsn, "--table", "events", "--max-alter-rows", "10"}, args...)...)
	}
	// The long transaction: it has the table open until it ends.
	long, err := db.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Rollback()
	var n int
	if err := long.QueryRow(`SELECT COUNT(*) FROM events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	cmd := herdCommand(t, "doctor", "ids", "widen", "--dsn", dsn, "--table", "events", "--max-alter-rows", "10", "--execute", "--lock-timeout", "50s", "--lock-tries", "1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var rename int64
	testutil.WaitFor(t, 30*time.Second, "the rename to wait", func() bool {
		err := db.QueryRow(`SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND INFO LIKE 'RENAME TABLE%' AND STATE LIKE 'Waiting for table metadata lock%'`).Scan(&rename)
		return err == nil
	})
	cmd.Process.Kill()
	cmd.Wait()
	// The server may go on waiting for a client that is gone: end its
	// session too, as a restart of the host would.
	db.Exec(fmt.Sprintf(`KILL %d`, rename))
	testutil.WaitFor(t, 30*time.Second, "the rename's session to end", func() bool {
		var left int
		db.QueryRow(`SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?`, rename).Scan(&left)
		return left == 0
	})
	if err := long.Commit(); err != nil {
		t.Fatal(err)
	}
	var newTables, checkpoints int
	db.QueryRow(`SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'events_new'`).Scan(&newTables)
	db.QueryRow(`SELECT COUNT(*) FROM herd_widen_checkpoints WHERE tbl = 'events'`).Scan(&checkpoints)
	if newTables != 1 || checkpoints != 1 {
		t.Fatalf("the kill left %d events_new and %d checkpoints; the test needs one of each", newTables, checkpoints)
	}
	code, out, errs := widen()
	if code != 0 || strings.Contains(out, "resuming") || !strings.Contains(out, "stopped before its rename") {
		t.Fatalf("the plan after the kill: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = widen("--execute")
	if code != 0 || !strings.Contains(out, "undone") || !strings.Contains(out, "copied and verified: all 50 rows") {
		t.Fatalf("--execute after the kill: exit %d\n%s%s", code, out, errs)
	}
	var typ string
	db.QueryRow(`SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'events' AND COLUMN_NAME = 'id'`).Scan(&typ)
	if typ != "bigint" {
		t.Fatalf("after the rerun events.id is %s", typ)
	}
	if errs != "" {
		t.Fatalf("off a terminal the copy drew %q", errs)
	}
}

// TestDoctorIDs_SchemeInAnyCase: a DSN's scheme is read in any case and
// mariadb:// is MySQL's; it used to be taken for a SQLite file name
// ("cannot reach the sqlite database", exit 3) without the database ever
// being asked. An unknown scheme is refused, naming the ones there are.
func TestDoctorIDs_SchemeInAnyCase(t *testing.T) {
	t.Parallel()
	dsn := testutil.PostgresSchemaDSN(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE orders (id serial PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	for _, scheme := range []string{"Postgres", "POSTGRESQL"} {
		upper := scheme + strings.TrimPrefix(dsn, "postgres")
		if code, out, errs := runDoctorCmd(t, "--dsn", upper); code != 0 || !strings.Contains(out, "orders") {
			t.Errorf("--dsn %s://…: exit %d, want 0 and the orders table\n%s%s", scheme, code, out, errs)
		}
	}
	if mysqlDSN := os.Getenv("HERD_TEST_MYSQL_DSN"); mysqlDSN != "" {
		maria := "MariaDB" + strings.TrimPrefix(mysqlDSN, "mysql")
		if code, out, errs := runDoctorCmd(t, "--dsn", maria); code == 3 || strings.Contains(errs, "sqlite") {
			t.Errorf("--dsn MariaDB://…: exit %d, read as SQLite?\n%s%s", code, out, errs)
		}
	}
	code, _, errs := runDoctorCmd(t, "--dsn", "mongodb://127.0.0.1/db")
	if code != 3 || !strings.Contains(errs, `unknown scheme "mongodb"`) {
		t.Errorf("--dsn mongodb://…: exit %d, want 3 naming the scheme: %s", code, errs)
	}
}
