package sqldb_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// twoProcesses opens the same fresh store twice, as two herd processes
// would: what one writes the other must read. The second one's clock runs
// ahead of the first by what skewB holds.
func twoProcesses(t *testing.T, d sqldb.Dialect, skewB *atomic.Int64) (*sqldb.DB, *sqldb.DB) {
	t.Helper()
	dsn := filepath.Join(t.TempDir(), "herd.db")
	if d == sqldb.Postgres {
		dsn = testutil.PostgresSchemaDSN(t)
	}
	open := func(skew *atomic.Int64) *sqldb.DB {
		db := sqldb.NewDB(dsn)
		db.Now = func() time.Time { return time.Now().UTC().Add(time.Duration(skew.Load())) }
		if err := db.Open(); err != nil {
			t.Fatalf("open %s store: %v", d, err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	a := open(new(atomic.Int64))
	return a, open(skewB)
}

// TestTickets: a ticket issued through one process is spent through
// another, once, within its time, and only while its token lives; it acts
// as its token with the grants as they are when it is spent.
func TestTickets(t *testing.T) {
	for _, d := range []sqldb.Dialect{sqldb.SQLite, sqldb.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			var skew atomic.Int64
			dbA, dbB := twoProcesses(t, d, &skew)
			f := newFixture(dbA)
			ten := f.mustTenant(t, "t")
			site := f.mustNode(t, ten.RootNodeID, "site")
			u, secret := f.mustUser(t, ten.ID, "browser")
			f.mustGrant(t, u.ID, site.ID, herd.RoleViewer)
			ctx := f.as(t, secret)
			issuer, spender := sqldb.NewTicketService(dbA), sqldb.NewTicketService(dbB)

			t.Run("OK", func(t *testing.T) {
				tk, err := issuer.CreateTicket(ctx)
				mustOK(t, err)
				if !herd.IsTicketSecret(tk.Secret) || time.Until(tk.ExpiresAt) > herd.TicketTTL+time.Second {
					t.Fatalf("ticket %+v", tk)
				}
				a, reauth, err := spender.RedeemTicket(t.Context(), tk.Secret)
				mustOK(t, err)
				want := herd.ActorFromContext(ctx)
				if a.Super || a.TokenID != want.TokenID || a.TenantID != ten.ID || a.UserID != u.ID || len(a.Grants) != 1 || a.Grants[0].NodeID != site.ID {
					t.Fatalf("actor %+v, want that of token %d", a, want.TokenID)
				}
				// The grants are read again, as they are now.
				f.mustGrant(t, u.ID, ten.RootNodeID, herd.RoleViewer)
				a2, err := reauth(t.Context())
				mustOK(t, err)
				if len(a2.Grants) != 2 {
					t.Fatalf("reauth grants %v, want 2", a2.Grants)
				}
			})
			t.Run("ErrUsed", func(t *testing.T) {
				tk, err := issuer.CreateTicket(ctx)
				mustOK(t, err)
				_, _, err = spender.RedeemTicket(t.Context(), tk.Secret)
				mustOK(t, err)
				for _, s := range []*sqldb.TicketService{issuer, spender} {
					_, _, err = s.RedeemTicket(t.Context(), tk.Secret)
					wantCode(t, err, herd.EUNAUTHORIZED)
				}
			})
			t.Run("OnceUnderRace", func(t *testing.T) {
				tk, err := issuer.CreateTicket(ctx)
				mustOK(t, err)
				var wg sync.WaitGroup
				var mu sync.Mutex
				ok, unauth := 0, 0
				for i := range 12 {
					s := []*sqldb.TicketService{issuer, spender}[i%2]
					wg.Go(func() {
						_, _, err := s.RedeemTicket(t.Context(), tk.Secret)
						mu.Lock()
						defer mu.Unlock()
						switch herd.ErrorCode(err) {
						case "":
							ok++
						case herd.EUNAUTHORIZED:
							unauth++
						default:
							t.Errorf("redeem: %v", err)
						}
					})
				}
				wg.Wait()
				if ok != 1 || unauth != 11 {
					t.Fatalf("%d redeemed and %d refused, want 1 and 11", ok, unauth)
				}
			})
			t.Run("ErrExpired", func(t *testing.T) {
				tk, err := issuer.CreateTicket(ctx)
				mustOK(t, err)
				skew.Store(int64(herd.TicketTTL + time.Second))
				defer skew.Store(0)
				_, _, err = spender.RedeemTicket(t.Context(), tk.Secret)
				wantCode(t, err, herd.EUNAUTHORIZED)
			})
			t.Run("ErrTokenRevoked", func(t *testing.T) {
				_, other := f.mustUser(t, ten.ID, "other")
				octx := f.as(t, other)
				tk, err := issuer.CreateTicket(octx)
				mustOK(t, err)
				tk2, err := issuer.CreateTicket(octx)
				mustOK(t, err)
				_, reauth, err := spender.RedeemTicket(t.Context(), tk2.Secret)
				mustOK(t, err)
				mustOK(t, f.Users.DeleteToken(f.super, herd.ActorFromContext(octx).TokenID))
				_, _, err = spender.RedeemTicket(t.Context(), tk.Secret)
				wantCode(t, err, herd.EUNAUTHORIZED)
				// A socket opened with a ticket learns of the revoke too.
				_, err = reauth(t.Context())
				wantCode(t, err, herd.EUNAUTHORIZED)
				// And a revoked token gets no new ticket.
				_, err = issuer.CreateTicket(octx)
				wantCode(t, err, herd.EUNAUTHORIZED)
			})
			t.Run("SuperAdmin", func(t *testing.T) {
				const adminSecret = "herd_admin_secret_for_ticket_tests_0123"
				_, err := dbA.EnsureAdminToken(t.Context(), adminSecret)
				mustOK(t, err)
				sctx := f.as(t, adminSecret)
				tk, err := issuer.CreateTicket(sctx)
				mustOK(t, err)
				a, _, err := spender.RedeemTicket(t.Context(), tk.Secret)
				mustOK(t, err)
				if !a.Super {
					t.Fatalf("actor %+v, want the super-admin", a)
				}
			})
			t.Run("ErrGarbage", func(t *testing.T) {
				for _, s := range []string{"", "x", secret, herd.TicketPrefix + strings.Repeat("A", 43)} {
					_, _, err := spender.RedeemTicket(t.Context(), s)
					wantCode(t, err, herd.EUNAUTHORIZED)
				}
				_, err := issuer.CreateTicket(context.Background())
				wantCode(t, err, herd.EUNAUTHORIZED)
			})
			t.Run("StoresOnlyAHash", func(t *testing.T) {
				tk, err := issuer.CreateTicket(ctx)
				mustOK(t, err)
				rows, err := dbA.SQL().QueryContext(t.Context(), `SELECT hash, token_hash FROM stream_tickets`)
				mustOK(t, err)
				defer rows.Close()
				n := 0
				for rows.Next() {
					var h, th string
					mustOK(t, rows.Scan(&h, &th))
					if strings.Contains(h+th, tk.Secret) || strings.Contains(h+th, secret) {
						t.Fatalf("a secret is stored in the clear: %q %q", h, th)
					}
					n++
				}
				if n == 0 {
					t.Fatal("no ticket stored")
				}
			})
		})
	}
}
