package herd

import "context"

// Actor is who is making a request: a super-admin (the bootstrap admin token,
// above every tenant) or a user of one tenant with their grants, loaded fresh
// for each request so that a revoke takes effect on the very next one.
type Actor struct {
	Super    bool
	UserID   int64
	TenantID int64
	TokenID  int64
	Grants   []*Grant
}

// Scope returns the subtrees the actor may act on with at least role min.
// A super-admin has no grants; callers give it a tenant and the root path.
func (a *Actor) Scope(min Role) Scope {
	return ResolveScope(a.TenantID, a.Grants, min)
}

// Allows reports whether the actor holds at least role min on the node or
// device at path in tenant tenantID.
func (a *Actor) Allows(tenantID int64, path string, min Role) bool {
	if a == nil {
		return false
	} else if a.Super {
		return true
	} else if a.TenantID != tenantID {
		return false
	}
	for _, g := range a.Grants {
		if g.Role.Rank() >= min.Rank() && PathUnder(path, g.Path) {
			return true
		}
	}
	return false
}

// SeesTenant reports whether the actor may see anything of tenantID at all.
func (a *Actor) SeesTenant(tenantID int64) bool {
	return a != nil && (a.Super || a.TenantID == tenantID)
}

type contextKey int

const actorContextKey contextKey = iota

// NewContextWithActor returns a copy of ctx carrying the actor.
func NewContextWithActor(ctx context.Context, a *Actor) context.Context {
	return context.WithValue(ctx, actorContextKey, a)
}

// ActorFromContext returns the actor in ctx, or nil.
func ActorFromContext(ctx context.Context) *Actor {
	a, _ := ctx.Value(actorContextKey).(*Actor)
	return a
}
