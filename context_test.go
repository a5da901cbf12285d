package herd_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/herd-iot/herd"
)

func TestActor_Allows(t *testing.T) {
	a := &herd.Actor{UserID: 5, TenantID: 1, Grants: []*herd.Grant{
		{TenantID: 1, Path: "/1/7/", Role: herd.RoleViewer},
		{TenantID: 1, Path: "/1/7/12/", Role: herd.RoleOperator},
		{TenantID: 1, Path: "/1/9/", Role: herd.RoleAdmin},
	}}
	t.Run("OK", func(t *testing.T) {
		for _, tt := range []struct {
			actor  *herd.Actor
			tenant int64
			path   string
			min    herd.Role
			want   bool
		}{
			{a, 1, "/1/7/", herd.RoleViewer, true},
			{a, 1, "/1/7/3/", herd.RoleViewer, true},
			{a, 1, "/1/7/3/", herd.RoleOperator, false},
			{a, 1, "/1/7/12/", herd.RoleOperator, true},
			{a, 1, "/1/7/12/4/", herd.RoleOperator, true},
			{a, 1, "/1/7/12/4/", herd.RoleAdmin, false},
			{a, 1, "/1/9/", herd.RoleAdmin, true},
			{a, 1, "/1/9/2/", herd.RoleViewer, true},
			{a, 1, "/1/", herd.RoleViewer, false},    // above the grants
			{a, 1, "/1/70/", herd.RoleViewer, false}, // a sibling sharing digits
			{a, 1, "/1/8/", herd.RoleViewer, false},
			{a, 2, "/1/7/", herd.RoleViewer, false}, // another tenant
			{&herd.Actor{Super: true}, 2, "/9/", herd.RoleAdmin, true},
			{&herd.Actor{TenantID: 1}, 1, "/1/", herd.RoleViewer, false},
			{nil, 1, "/1/", herd.RoleViewer, false},
		} {
			if got := tt.actor.Allows(tt.tenant, tt.path, tt.min); got != tt.want {
				t.Fatalf("Allows(%d, %q, %s) = %v, want %v", tt.tenant, tt.path, tt.min, got, tt.want)
			}
		}
	})
	t.Run("OKScope", func(t *testing.T) {
		if got := a.Scope(herd.RoleOperator).Paths; len(got) != 2 || got[0] != "/1/7/12/" || got[1] != "/1/9/" {
			t.Fatalf("operator scope %q", got)
		}
		if got := a.Scope(herd.RoleViewer).Paths; len(got) != 2 || got[0] != "/1/7/" || got[1] != "/1/9/" {
			t.Fatalf("viewer scope %q", got)
		}
	})
	t.Run("OKSeesTenant", func(t *testing.T) {
		var none *herd.Actor
		if !a.SeesTenant(1) || a.SeesTenant(2) || none.SeesTenant(1) || !(&herd.Actor{Super: true}).SeesTenant(2) {
			t.Fatal("SeesTenant is wrong")
		}
	})
}

func TestActorFromContext(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		a := &herd.Actor{UserID: 3}
		if got := herd.ActorFromContext(herd.NewContextWithActor(context.Background(), a)); got != a {
			t.Fatalf("got %v", got)
		}
		if got := herd.ActorFromContext(context.Background()); got != nil {
			t.Fatalf("got %v from an empty context", got)
		}
	})
}

func TestErrorCode(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		err := herd.Errorf(herd.ECONFLICT, "key %q taken", "k")
		if herd.ErrorCode(err) != herd.ECONFLICT || herd.ErrorMessage(err) != `key "k" taken` {
			t.Fatalf("got %s %s", herd.ErrorCode(err), herd.ErrorMessage(err))
		}
		wrapped := fmtWrap(err)
		if herd.ErrorCode(wrapped) != herd.ECONFLICT {
			t.Fatalf("wrapped code %s", herd.ErrorCode(wrapped))
		}
		if herd.ErrorCode(nil) != "" || herd.ErrorMessage(nil) != "" {
			t.Fatal("nil error has a code")
		}
	})
	t.Run("ErrInternal", func(t *testing.T) {
		err := context.DeadlineExceeded
		if herd.ErrorCode(err) != herd.EINTERNAL || herd.ErrorMessage(err) != "Internal error." {
			t.Fatalf("got %s %s", herd.ErrorCode(err), herd.ErrorMessage(err))
		}
	})
}

func fmtWrap(err error) error { return fmt.Errorf("op: %w", err) }
