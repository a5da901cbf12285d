package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

func TestUsers(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db)
		f := e.mustCreateFleet()
		ctx := context.Background()
		t.Run("Create", func(t *testing.T) {
			r := e.do("POST", "/v1/users", adminSecret, map[string]any{"tenant_id": fmt.Sprint(f.tenant.ID), "name": "carol"})
			r.wantStatus(t, http.StatusCreated)
			var raw map[string]any
			r.decode(t, &raw)
			if id, ok := raw["id"].(string); !ok || id == "0" || raw["tenant_id"] != fmt.Sprint(f.tenant.ID) || raw["name"] != "carol" {
				t.Fatalf("user %s", r.Body)
			}
		})
		t.Run("View", func(t *testing.T) {
			// Users are seen as GET /v1/users lists them: themselves, and
			// by admins above their grants; a viewer sees no one else.
			for _, token := range []string{f.bobToken.Secret, adminSecret} {
				r := e.do("GET", fmt.Sprintf("/v1/users/%d", f.bob.ID), token, nil)
				r.wantStatus(t, http.StatusOK)
				var u herd.User
				r.decode(t, &u)
				if u.ID != f.bob.ID || u.Name != "bob" {
					t.Fatalf("user %+v", u)
				}
			}
			e.do("GET", fmt.Sprintf("/v1/users/%d", f.bob.ID), f.aliceToken.Secret, nil).wantStatus(t, http.StatusNotFound)
		})
		t.Run("ErrCreateWithoutTenantAdmin", func(t *testing.T) {
			// bob is an admin of a site, not of the tenant.
			r := e.do("POST", "/v1/users", f.bobToken.Secret, map[string]any{"tenant_id": fmt.Sprint(f.tenant.ID), "name": "mallory"})
			r.wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
		})
		t.Run("ErrTenantRequired", func(t *testing.T) {
			e.do("POST", "/v1/users", adminSecret, `{"name":"x"}`).wantError(t, http.StatusBadRequest, herd.EINVALID, "tenant_id")
		})
		t.Run("ErrOtherTenantNotFound", func(t *testing.T) {
			other := &herd.Tenant{Name: "initech"}
			if err := e.admin.CreateTenant(ctx, other); err != nil {
				t.Fatal(err)
			}
			u := &herd.User{TenantID: other.ID, Name: "peter"}
			if err := e.admin.CreateUser(ctx, u); err != nil {
				t.Fatal(err)
			}
			e.do("GET", fmt.Sprintf("/v1/users/%d", u.ID), f.aliceToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
			e.do("POST", fmt.Sprintf("/v1/users/%d/tokens", u.ID), f.aliceToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
		})
	})
}

func TestTokens(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db)
		f := e.mustCreateFleet()
		t.Run("CreateShowsSecretOnce", func(t *testing.T) {
			r := e.do("POST", fmt.Sprintf("/v1/users/%d/tokens", f.alice.ID), adminSecret, nil)
			r.wantStatus(t, http.StatusCreated)
			var raw map[string]any
			r.decode(t, &raw)
			secret, _ := raw["token"].(string)
			if !herd.IsTokenSecret(secret) || raw["user_id"] != fmt.Sprint(f.alice.ID) {
				t.Fatalf("token answer %s", r.Body)
			}
			if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
				t.Fatalf("Cache-Control %q", cc)
			}
			e.do("GET", "/v1/devices", secret, nil).wantStatus(t, http.StatusOK)
			// Listing the user's grants never shows a secret again.
			if g := e.do("GET", fmt.Sprintf("/v1/users/%d/grants", f.alice.ID), adminSecret, nil); strings.Contains(string(g.Body), secret) {
				t.Fatal("secret shown again")
			}
		})
		t.Run("CreateWithEmptyObject", func(t *testing.T) {
			e.do("POST", fmt.Sprintf("/v1/users/%d/tokens", f.alice.ID), adminSecret, `{}`).wantStatus(t, http.StatusCreated)
			e.do("POST", fmt.Sprintf("/v1/users/%d/tokens", f.alice.ID), adminSecret, `{"expires_in":"1h"}`).wantError(t, http.StatusBadRequest, herd.EINVALID, "expires_in")
		})
		t.Run("UserCreatesOwnToken", func(t *testing.T) {
			e.do("POST", fmt.Sprintf("/v1/users/%d/tokens", f.alice.ID), f.aliceToken.Secret, nil).wantStatus(t, http.StatusCreated)
		})
		t.Run("ErrTokenForSomeoneElse", func(t *testing.T) {
			e.do("POST", fmt.Sprintf("/v1/users/%d/tokens", f.bob.ID), f.aliceToken.Secret, nil).wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
		})
		t.Run("DeleteRevokesAtOnce", func(t *testing.T) {
			tok, err := e.admin.CreateToken(context.Background(), f.bob.ID)
			if err != nil {
				t.Fatal(err)
			}
			e.do("GET", "/v1/devices", tok.Secret, nil).wantStatus(t, http.StatusOK)
			e.do("DELETE", fmt.Sprintf("/v1/tokens/%d", tok.ID), adminSecret, nil).wantStatus(t, http.StatusNoContent)
			e.do("GET", "/v1/devices", tok.Secret, nil).wantError(t, http.StatusUnauthorized, herd.EUNAUTHORIZED)
			e.do("DELETE", fmt.Sprintf("/v1/tokens/%d", tok.ID), adminSecret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
		})
		t.Run("ErrDeleteSomeoneElsesToken", func(t *testing.T) {
			// alice cannot see the tenant's root, so she cannot know that
			// bob's token exists: not found (TestNotFoundOutsideGrants has
			// the 403 for a viewer of the root).
			e.do("DELETE", fmt.Sprintf("/v1/tokens/%d", f.bobToken.ID), f.aliceToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
			e.do("GET", "/v1/devices", f.bobToken.Secret, nil).wantStatus(t, http.StatusOK)
		})
	})
}
