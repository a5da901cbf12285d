// Package testutil holds fixtures shared by herd's tests: stores on every
// dialect the machine offers, with a unique schema per test that is dropped
// when the test ends.
package testutil

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/sqldb"
	_ "github.com/jackc/pgx/v5/stdlib"
)

// PostgresURLEnv names the environment variable holding the PostgreSQL URL
// that store tests run against. CI always sets it.
const PostgresURLEnv = "HERD_TEST_POSTGRES_URL"

// Dialects lists the dialects to test: SQLite always, PostgreSQL when
// HERD_TEST_POSTGRES_URL is set.
func Dialects() []sqldb.Dialect {
	ds := []sqldb.Dialect{sqldb.SQLite}
	if os.Getenv(PostgresURLEnv) != "" {
		ds = append(ds, sqldb.Postgres)
	}
	return ds
}

// RunWithDialects runs fn as a subtest on a fresh store of each dialect. On
// PostgreSQL a skipped subtest says why when the URL is unset.
func RunWithDialects(t *testing.T, fn func(t *testing.T, db *sqldb.DB)) {
	t.Helper()
	for _, d := range []sqldb.Dialect{sqldb.SQLite, sqldb.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			fn(t, MustOpenDB(t, d))
		})
	}
}

// RunWithStateCache is RunWithDialects for tests of the scoped query: each
// dialect runs twice, once answering from the database's own plans and once
// ("+cache") with every query answered through the in-memory state cache,
// which then must give the same answers.
func RunWithStateCache(t *testing.T, fn func(t *testing.T, db *sqldb.DB)) {
	t.Helper()
	for _, d := range []sqldb.Dialect{sqldb.SQLite, sqldb.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			fn(t, MustOpenDB(t, d))
		})
		t.Run(string(d)+"+cache", func(t *testing.T) {
			db := MustOpenDB(t, d)
			// No background refresh: the hooks of some tests count statements, and
			// every query catches up first anyway.
			db.StateCache = sqldb.StateCacheConfig{MinTenantDevices: 1, Always: true, Refresh: time.Hour}
			fn(t, db)
		})
	}
}

// MustOpenDB opens a fresh, migrated store of the dialect: a SQLite file in
// a temporary directory, or a PostgreSQL schema with a unique name that is
// dropped when the test ends. It skips the test with a clear message when
// PostgreSQL is asked for but HERD_TEST_POSTGRES_URL is unset.
func MustOpenDB(tb testing.TB, d sqldb.Dialect) *sqldb.DB {
	tb.Helper()
	dsn := filepath.Join(tb.TempDir(), "herd.db")
	if d == sqldb.Postgres {
		dsn = PostgresSchemaDSN(tb)
	}
	db := sqldb.NewDB(dsn)
	if err := db.Open(); err != nil {
		tb.Fatalf("open %s store: %v", d, err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// PostgresSchemaDSN creates a schema with a unique name in the test
// database and returns a DSN whose search_path points at it. The schema is
// dropped when the test ends.
func PostgresSchemaDSN(tb testing.TB) string {
	tb.Helper()
	base := os.Getenv(PostgresURLEnv)
	if base == "" {
		tb.Skipf("PostgreSQL tests skipped: set %s (for example postgres://postgres@127.0.0.1:5432/test?sslmode=disable)", PostgresURLEnv)
	}
	buf := make([]byte, 6)
	rand.Read(buf)
	schema := "herd_test_" + hex.EncodeToString(buf)
	admin, err := sql.Open("pgx", base)
	if err != nil {
		tb.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
		tb.Fatalf("create schema: %v", err)
	}
	tb.Cleanup(func() {
		admin, err := sql.Open("pgx", base)
		if err != nil {
			return
		}
		defer admin.Close()
		admin.Exec(`DROP SCHEMA ` + schema + ` CASCADE`)
	})
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// SuperContext returns a context acting as the super-admin.
func SuperContext() context.Context {
	return herd.NewContextWithActor(context.Background(), &herd.Actor{Super: true})
}

// SyncBuffer is a bytes.Buffer that a server's logger and the test reading
// its output may use at the same time.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
