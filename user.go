package herd

import (
	"context"
	"strings"
	"time"
)

// User is a person or system of one tenant. What a user may see and do comes
// only from their grants.
type User struct {
	ID       int64  `json:"id,string"`
	TenantID int64  `json:"tenant_id,string"`
	Name     string `json:"name"`
	// Disabled users exist, keep their grants and tokens, and cannot
	// authenticate: each of their tokens is EUNAUTHORIZED while it is set.
	Disabled  bool      `json:"disabled"`
	CreatedAt time.Time `json:"created_at"`
	// Version counts the changes of its name and disabled (see
	// CheckVersion).
	Version int64 `json:"version"`
}

// Validate reports whether the user can be created.
func (u *User) Validate() error {
	u.Name = strings.TrimSpace(u.Name)
	if u.TenantID == 0 {
		return Errorf(EINVALID, "tenant_id is required")
	}
	return checkRequiredText("name", u.Name, MaxNameLen)
}

// Token is an API token of a user. Its secret is shown once, at creation;
// the store keeps only a hash of it.
type Token struct {
	ID        int64     `json:"id,string"`
	TenantID  int64     `json:"tenant_id,string"`
	UserID    int64     `json:"user_id,string"`
	Secret    string    `json:"token,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// UserService manages users and their API tokens and turns a presented
// token into an Actor.
type UserService interface {
	// CreateUser returns EFORBIDDEN unless the actor is an admin of the
	// tenant's root node (or a super-admin).
	CreateUser(ctx context.Context, u *User) error
	// FindUserByID returns ENOTFOUND for users of other tenants.
	FindUserByID(ctx context.Context, id int64) (*User, error)
	// UpdateUser renames, disables or enables a user and returns it as it
	// now is. Returns ENOTFOUND for users of other tenants, EFORBIDDEN
	// unless the actor is an admin of the tenant's root node (or a
	// super-admin), EINVALID for a bad value, EPRECONDITION for a stale
	// u.IfVersion.
	UpdateUser(ctx context.Context, id int64, u UserUpdate) (*User, error)
	// CreateToken creates a token for the user and returns it with its
	// secret. Users may create tokens for themselves; tenant admins for
	// anyone in the tenant.
	CreateToken(ctx context.Context, userID int64) (*Token, error)
	// DeleteToken revokes a token at once. Its owner and tenant admins may.
	// Returns ENOTFOUND for a token of another tenant, and for another
	// user's token when the actor cannot see the tenant's root (it cannot
	// know the token exists); EFORBIDDEN for a viewer of the root.
	DeleteToken(ctx context.Context, id int64) error
	// Authenticate returns the actor for a token secret, with grants loaded
	// now. Returns EUNAUTHORIZED for an unknown or revoked token, and for a
	// token of a disabled user.
	Authenticate(ctx context.Context, secret string) (*Actor, error)
}

// TokenPrefix starts every secret herd issues, so leaked tokens are easy to
// recognise in logs and by secret scanners.
const TokenPrefix = "herd_"

// IsTokenSecret reports whether s has the shape of a herd token secret.
func IsTokenSecret(s string) bool {
	return strings.HasPrefix(s, TokenPrefix) && len(s) > len(TokenPrefix)+20
}
