package sqldb_test

import (
	"context"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/sqldb"
)

// TestMigration0012: the keys stored before idempotency records had a
// tenant column take their tenant from the scope, and are answered to
// their tenant only (a super-admin's, tenant 0, to super-admins).
func TestMigration0012(t *testing.T) {
	t.Parallel()
	for _, d := range []sqldb.Dialect{sqldb.SQLite, sqldb.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			dsn, raw := storeAt(t, d, "0011_store_keys.sql")
			for _, scope := range []string{"7/3/POST /v1/nodes", "0/2/POST /v1/tenants"} {
				if _, err := raw.Exec(placeholders(d, `INSERT INTO idempotency_keys (scope, key, request_hash, status, response_status, response_body, locked_until, expires_at) VALUES (?, 'k', 'h', 'done', 201, '{"old":true}', 0, ?)`), scope, int64(1)<<60); err != nil {
					t.Fatal(err)
				}
			}
			db := sqldb.NewDB(dsn)
			if err := db.Open(); err != nil {
				t.Fatalf("migrate: %v", err)
			}
			defer db.Close()
			tenants := map[string]int64{}
			rows, err := db.SQL().Query(`SELECT scope, tenant_id FROM idempotency_keys`)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var scope string
				var tenant int64
				if err := rows.Scan(&scope, &tenant); err != nil {
					t.Fatal(err)
				}
				tenants[scope] = tenant
			}
			rows.Close()
			if tenants["7/3/POST /v1/nodes"] != 7 || tenants["0/2/POST /v1/tenants"] != 0 || len(tenants) != 2 {
				t.Fatalf("tenants after the migration: %v", tenants)
			}
			s := sqldb.NewIdempotencyService(db)
			for _, tt := range []struct {
				actor *herd.Actor
				scope string
				want  string
			}{
				{&herd.Actor{TenantID: 7, UserID: 1, TokenID: 3}, "7/3/POST /v1/nodes", herd.IdempotencyReplay},
				{&herd.Actor{TenantID: 8, UserID: 1, TokenID: 3}, "7/3/POST /v1/nodes", herd.IdempotencyNew},
				{&herd.Actor{Super: true, TokenID: 2}, "0/2/POST /v1/tenants", herd.IdempotencyReplay},
				{&herd.Actor{TenantID: 7, UserID: 1, TokenID: 2}, "0/2/POST /v1/tenants", herd.IdempotencyNew},
			} {
				r, err := s.BeginRequest(herd.NewContextWithActor(context.Background(), tt.actor), tt.scope, "k", "h")
				if err != nil || r.State != tt.want || (r.State == herd.IdempotencyReplay && string(r.Body) != `{"old":true}`) {
					t.Fatalf("%+v on %s: %+v, %v; want %s", tt.actor, tt.scope, r, err, tt.want)
				}
				if r.Claim != nil {
					r.Claim.Release()
				}
			}
		})
	}
}

// placeholders writes the two ? of a statement as PostgreSQL's $1 and $2.
func placeholders(d sqldb.Dialect, q string) string {
	if d == sqldb.Postgres {
		q = strings.Replace(strings.Replace(q, "?", "$1", 1), "?", "$2", 1)
	}
	return q
}
