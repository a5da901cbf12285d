package sqldb_test

import (
	"context"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

func TestUserService_CreateUser(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		region := f.mustNode(t, ten.RootNodeID, "region")
		t.Run("OK", func(t *testing.T) {
			u := &herd.User{TenantID: ten.ID, Name: " ana "}
			mustOK(t, f.Users.CreateUser(f.super, u))
			if u.ID == 0 || u.Name != "ana" || u.CreatedAt.IsZero() {
				t.Fatalf("got %+v", u)
			}
			got, err := f.Users.FindUserByID(f.super, u.ID)
			mustOK(t, err)
			if *got != *u {
				t.Fatalf("found %+v, created %+v", got, u)
			}
		})
		t.Run("OKTenantAdmin", func(t *testing.T) {
			admin, secret := f.mustUser(t, ten.ID, "admin")
			f.mustGrant(t, admin.ID, ten.RootNodeID, herd.RoleAdmin)
			mustOK(t, f.Users.CreateUser(f.as(t, secret), &herd.User{TenantID: ten.ID, Name: "bo"}))
		})
		t.Run("ErrForbidden", func(t *testing.T) {
			// An admin of a region is not an admin of the tenant.
			u, secret := f.mustUser(t, ten.ID, "regional")
			f.mustGrant(t, u.ID, region.ID, herd.RoleAdmin)
			wantCode(t, f.Users.CreateUser(f.as(t, secret), &herd.User{TenantID: ten.ID, Name: "cy"}), herd.EFORBIDDEN)
		})
		t.Run("ErrInvalid", func(t *testing.T) {
			wantCode(t, f.Users.CreateUser(f.super, &herd.User{TenantID: ten.ID}), herd.EINVALID)
			wantCode(t, f.Users.CreateUser(f.super, &herd.User{Name: "no tenant"}), herd.EINVALID)
		})
		t.Run("ErrTenantNotFound", func(t *testing.T) {
			wantCode(t, f.Users.CreateUser(f.super, &herd.User{TenantID: 1 << 40, Name: "x"}), herd.ENOTFOUND)
		})
		t.Run("ErrUnauthorized", func(t *testing.T) {
			wantCode(t, f.Users.CreateUser(context.Background(), &herd.User{TenantID: ten.ID, Name: "x"}), herd.EUNAUTHORIZED)
		})
	})
}

func TestUserService_Tokens(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		site := f.mustNode(t, ten.RootNodeID, "site")
		t.Run("OK", func(t *testing.T) {
			u := &herd.User{TenantID: ten.ID, Name: "dee"}
			mustOK(t, f.Users.CreateUser(f.super, u))
			g := f.mustGrant(t, u.ID, site.ID, herd.RoleOperator)
			tok, err := f.Users.CreateToken(f.super, u.ID)
			mustOK(t, err)
			if tok.ID == 0 || tok.UserID != u.ID || tok.TenantID != ten.ID || !herd.IsTokenSecret(tok.Secret) {
				t.Fatalf("got %+v", tok)
			}
			a, err := f.Users.Authenticate(context.Background(), tok.Secret)
			mustOK(t, err)
			if a.Super || a.UserID != u.ID || a.TenantID != ten.ID || a.TokenID != tok.ID || len(a.Grants) != 1 || a.Grants[0].ID != g.ID || a.Grants[0].Path != site.Path {
				t.Fatalf("actor %+v", a)
			}
			// A user issues a second token for themself, and it works alone
			// after the first is revoked.
			ctx := herd.NewContextWithActor(context.Background(), a)
			tok2, err := f.Users.CreateToken(ctx, u.ID)
			mustOK(t, err)
			mustOK(t, f.Users.DeleteToken(ctx, tok.ID))
			_, err = f.Users.Authenticate(context.Background(), tok.Secret)
			wantCode(t, err, herd.EUNAUTHORIZED)
			a2, err := f.Users.Authenticate(context.Background(), tok2.Secret)
			mustOK(t, err)
			if a2.UserID != u.ID || a2.TokenID != tok2.ID {
				t.Fatalf("actor %+v", a2)
			}
			wantCode(t, f.Users.DeleteToken(ctx, tok.ID), herd.ENOTFOUND)
		})
		t.Run("OKTenantAdminRevokes", func(t *testing.T) {
			u, secret := f.mustUser(t, ten.ID, "eve")
			admin, asecret := f.mustUser(t, ten.ID, "admin")
			f.mustGrant(t, admin.ID, ten.RootNodeID, herd.RoleAdmin)
			a, err := f.Users.Authenticate(context.Background(), secret)
			mustOK(t, err)
			tok, err := f.Users.CreateToken(f.as(t, asecret), u.ID)
			mustOK(t, err)
			mustOK(t, f.Users.DeleteToken(f.as(t, asecret), a.TokenID))
			mustOK(t, f.Users.DeleteToken(f.as(t, asecret), tok.ID))
			for _, s := range []string{secret, tok.Secret} {
				_, err := f.Users.Authenticate(context.Background(), s)
				wantCode(t, err, herd.EUNAUTHORIZED)
			}
		})
		t.Run("ErrForbidden", func(t *testing.T) {
			u, secret := f.mustUser(t, ten.ID, "fay")
			other, osecret := f.mustUser(t, ten.ID, "gus")
			f.mustGrant(t, other.ID, site.ID, herd.RoleAdmin) // not the tenant root
			_, err := f.Users.CreateToken(f.as(t, osecret), u.ID)
			wantCode(t, err, herd.EFORBIDDEN)
			a, err := f.Users.Authenticate(context.Background(), secret)
			mustOK(t, err)
			// gus does not see the tenant's root, where token events go:
			// another user's token is not found for him.
			wantCode(t, f.Users.DeleteToken(f.as(t, osecret), a.TokenID), herd.ENOTFOUND)
			if _, err := f.Users.Authenticate(context.Background(), secret); err != nil {
				t.Fatalf("token revoked by a forbidden call: %v", err)
			}
		})
		t.Run("ErrNotFound", func(t *testing.T) {
			_, err := f.Users.CreateToken(f.super, 1<<40)
			wantCode(t, err, herd.ENOTFOUND)
			wantCode(t, f.Users.DeleteToken(f.super, 1<<40), herd.ENOTFOUND)
			_, err = f.Users.FindUserByID(f.super, 1<<40)
			wantCode(t, err, herd.ENOTFOUND)
		})
		t.Run("ErrUnauthorized", func(t *testing.T) {
			for _, s := range []string{"", "nope", "herd_", herd.TokenPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", sqldb.NewTokenSecret()} {
				_, err := f.Users.Authenticate(context.Background(), s)
				wantCode(t, err, herd.EUNAUTHORIZED)
			}
			_, err := f.Users.CreateToken(context.Background(), 1)
			wantCode(t, err, herd.EUNAUTHORIZED)
		})
	})
}

func TestDB_EnsureAdminToken(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		t.Run("OK", func(t *testing.T) {
			want := sqldb.NewTokenSecret()
			got, err := db.EnsureAdminToken(context.Background(), want)
			mustOK(t, err)
			if got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
			a, err := f.Users.Authenticate(context.Background(), want)
			mustOK(t, err)
			if !a.Super {
				t.Fatalf("actor %+v is not the super-admin", a)
			}
			// Later starts keep the first token.
			again, err := db.EnsureAdminToken(context.Background(), "")
			mustOK(t, err)
			if again != "" {
				t.Fatalf("second call made %q", again)
			}
		})
		t.Run("ErrShape", func(t *testing.T) {
			if _, err := db.EnsureAdminToken(context.Background(), "short"); err == nil {
				t.Fatal("accepted a malformed admin token")
			}
		})
	})
}
