package sqldb_test

import (
	"context"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestAuthenticateDevice_KeyNotText: a device key that no store can hold
// (not UTF-8, or with a NUL) is a bad key like any unknown one, not a store
// error: PostgreSQL refuses such text even in a WHERE clause.
func TestAuthenticateDevice_KeyNotText(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		creds := sqldb.NewCredentialService(db)
		for _, key := range []string{"k\xff", "k\x00"} {
			_, err := creds.AuthenticateDevice(context.Background(), key, sqldb.NewTokenSecret())
			wantCode(t, err, herd.EUNAUTHORIZED)
		}
	})
}
