package testutil

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	"github.com/herd-iot/herd/idguard"
)

// MySQLDSNEnv names the environment variable holding the MySQL or MariaDB
// DSN (mysql://root@127.0.0.1:3306/test) that tests of other people's
// databases run against. CI always sets it.
const MySQLDSNEnv = "HERD_TEST_MYSQL_DSN"

// MySQLDatabase creates a database with a unique name on the server of
// HERD_TEST_MYSQL_DSN and returns a DSN for it, and a connection; the
// database is dropped when the test ends. It skips the test with a clear
// message when the variable is unset.
func MySQLDatabase(tb testing.TB) (string, *sql.DB) {
	tb.Helper()
	base := os.Getenv(MySQLDSNEnv)
	if base == "" {
		tb.Skipf("MySQL/MariaDB tests skipped: set %s (for example mysql://root@127.0.0.1:3306/test)", MySQLDSNEnv)
	}
	admin, _, err := idguard.Open(base)
	if err != nil {
		tb.Fatal(err)
	}
	defer admin.Close()
	buf := make([]byte, 6)
	rand.Read(buf)
	name := "herd_test_" + hex.EncodeToString(buf)
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		tb.Fatalf("create database: %v", err)
	}
	tb.Cleanup(func() {
		admin, _, err := idguard.Open(base)
		if err != nil {
			return
		}
		defer admin.Close()
		admin.Exec("DROP DATABASE IF EXISTS " + name)
	})
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatal(err)
	}
	u.Path = "/" + name
	dsn := u.String()
	db, _, err := idguard.Open(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return dsn, db
}
