package sqldb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/herd-iot/herd"
)

// UserService implements herd.UserService.
type UserService struct{ db *DB }

var _ herd.UserService = (*UserService)(nil)

// NewUserService returns a UserService on db.
func NewUserService(db *DB) *UserService { return &UserService{db: db} }

// NewTokenSecret returns a fresh token secret with 256 random bits.
func NewTokenSecret() string { return newSecret(herd.TokenPrefix) }

// newSecret returns prefix and 256 random bits: every secret herd makes
// (tokens and sessions, tickets, password links), only a hash of which is
// kept (hashToken).
func newSecret(prefix string) string {
	buf := make([]byte, 32)
	rand.Read(buf)
	return prefix + base64.RawURLEncoding.EncodeToString(buf)
}

// rootPath returns the path of a tenant's root node, which admins of the
// whole tenant hold a grant on.
func (tx *Tx) rootPath(ctx context.Context, tenantID int64) (string, error) {
	t, err := tx.findTenant(ctx, tenantID)
	if err != nil {
		return "", err
	}
	return herd.ChildPath("/", t.RootNodeID), nil
}

// requireTenantAdmin returns EFORBIDDEN unless the actor is a super-admin or
// an admin of the tenant's root node.
func (tx *Tx) requireTenantAdmin(ctx context.Context, a *herd.Actor, tenantID int64) error {
	if !a.SeesTenant(tenantID) {
		return herd.Errorf(herd.ENOTFOUND, "tenant %d not found", tenantID)
	}
	root, err := tx.rootPath(ctx, tenantID)
	if err != nil {
		return err
	}
	if !a.Allows(tenantID, root, herd.RoleAdmin) {
		return herd.Errorf(herd.EFORBIDDEN, "admin role on the tenant's root node required")
	}
	return nil
}

// CreateUser creates a user in a tenant.
func (s *UserService) CreateUser(ctx context.Context, u *herd.User) (err error) {
	defer wrapOp("sqldb.CreateUser", &err)
	a, err := actor(ctx)
	if err != nil {
		return err
	} else if err := u.Validate(); err != nil {
		return err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := tx.requireTenantAdmin(ctx, a, u.TenantID); err != nil {
		return err
	}
	if u.ID, err = tx.insertID(ctx, `INSERT INTO users (tenant_id, name, created_at) VALUES (?, ?, ?)`, u.TenantID, u.Name, tx.now.UnixMilli()); err != nil {
		return err
	}
	u.CreatedAt, u.Version = tx.now, 1
	root, err := tx.rootPath(ctx, u.TenantID)
	if err != nil {
		return err
	}
	if err := tx.appendEvents(ctx, u.TenantID, newEvent(herd.EventUserCreated, herd.EventSubjectUser, u.ID, root, u)); err != nil {
		return err
	}
	return tx.Commit()
}

// FindUserByID returns a user the actor may see, as GET /v1/users lists
// them: themself, any user for a super-admin or an admin of the tenant's
// root, and for an admin of other nodes the users holding a grant on or
// under one of them. Anyone else is told the user does not exist.
func (s *UserService) FindUserByID(ctx context.Context, id int64) (_ *herd.User, err error) {
	defer wrapOp("sqldb.FindUserByID", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.User, error) {
		u, err := tx.findUser(ctx, a, id)
		if err != nil || a.Super || a.UserID == u.ID {
			return u, err
		}
		root, err := tx.rootPath(ctx, u.TenantID)
		if err != nil {
			return nil, err
		}
		if a.Allows(u.TenantID, root, herd.RoleAdmin) {
			return u, nil
		}
		paths := a.Scope(herd.RoleAdmin).Paths
		if len(paths) > 0 {
			var b strings.Builder
			args := []any{u.ID, u.TenantID}
			for i, p := range paths {
				if i > 0 {
					b.WriteString(" OR ")
				}
				b.WriteString("(n.path >= ? AND n.path < ?)")
				args = append(args, p, herd.PathUpperBound(p))
			}
			var one int
			err := tx.QueryRowContext(ctx, `SELECT 1 FROM grants g JOIN nodes n ON n.id = g.node_id AND n.tenant_id = g.tenant_id
				WHERE g.user_id = ? AND g.tenant_id = ? AND (`+b.String()+`) LIMIT 1`, args...).Scan(&one)
			if err == nil {
				return u, nil
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return nil, err
			}
		}
		return nil, herd.Errorf(herd.ENOTFOUND, "user %d not found", id)
	})
}

func (tx *Tx) findUser(ctx context.Context, a *herd.Actor, id int64) (*herd.User, error) {
	var u herd.User
	var created int64
	cond, args := tenantCond(a, "tenant_id")
	err := tx.QueryRowContext(ctx, `SELECT id, tenant_id, name, disabled, created_at, version FROM users WHERE id = ?`+cond, append([]any{id}, args...)...).Scan(&u.ID, &u.TenantID, &u.Name, &u.Disabled, &created, &u.Version)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !a.SeesTenant(u.TenantID)) {
		return nil, herd.Errorf(herd.ENOTFOUND, "user %d not found", id)
	} else if err != nil {
		return nil, err
	}
	u.CreatedAt = msToTime(created)
	return &u, nil
}

// CreateToken issues a token for a user: to the user themself, or by an
// admin of their tenant.
func (s *UserService) CreateToken(ctx context.Context, userID int64) (_ *herd.Token, err error) {
	defer wrapOp("sqldb.CreateToken", &err)
	a, err := actor(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	u, err := tx.findUser(ctx, a, userID)
	if err != nil {
		return nil, err
	}
	if a.Super || a.UserID != u.ID {
		if err := tx.requireTenantAdmin(ctx, a, u.TenantID); err != nil {
			return nil, err
		}
	}
	t := &herd.Token{TenantID: u.TenantID, UserID: u.ID, Secret: NewTokenSecret(), CreatedAt: tx.now}
	if t.ID, err = tx.insertID(ctx, `INSERT INTO tokens (tenant_id, user_id, hash, created_at) VALUES (?, ?, ?, ?)`, t.TenantID, t.UserID, hashToken(t.Secret), tx.now.UnixMilli()); err != nil {
		return nil, err
	}
	root, err := tx.rootPath(ctx, u.TenantID)
	if err != nil {
		return nil, err
	}
	// The event never carries the secret.
	ev := newEvent(herd.EventTokenCreated, herd.EventSubjectToken, t.ID, root, herd.Token{ID: t.ID, TenantID: t.TenantID, UserID: t.UserID, CreatedAt: t.CreatedAt})
	if err := tx.appendEvents(ctx, u.TenantID, ev); err != nil {
		return nil, err
	}
	return t, tx.Commit()
}

// DeleteToken revokes a token: its owner or a tenant admin may.
func (s *UserService) DeleteToken(ctx context.Context, id int64) (err error) {
	defer wrapOp("sqldb.DeleteToken", &err)
	a, err := actor(ctx)
	if err != nil {
		return err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var t herd.Token
	cond, args := tenantCond(a, "tenant_id")
	err = tx.QueryRowContext(ctx, `SELECT id, tenant_id, user_id FROM tokens WHERE id = ? AND NOT session`+cond, append([]any{id}, args...)...).Scan(&t.ID, &t.TenantID, &t.UserID)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !a.SeesTenant(t.TenantID)) {
		return herd.Errorf(herd.ENOTFOUND, "token %d not found", id)
	} else if err != nil {
		return err
	}
	if a.Super || a.UserID != t.UserID {
		// Another user's token is seen only by viewers of the tenant's
		// root, who read its token.* events; to anyone else it is not
		// found, as it would be in another tenant.
		root, err := tx.rootPath(ctx, t.TenantID)
		if err != nil {
			return err
		} else if !a.Allows(t.TenantID, root, herd.RoleViewer) {
			return herd.Errorf(herd.ENOTFOUND, "token %d not found", id)
		}
		if err := tx.requireTenantAdmin(ctx, a, t.TenantID); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM tokens WHERE id = ? AND tenant_id = ?`, id, t.TenantID); err != nil {
		return err
	}
	root, err := tx.rootPath(ctx, t.TenantID)
	if err != nil {
		return err
	}
	if err := tx.appendEvents(ctx, t.TenantID, newEvent(herd.EventTokenDeleted, herd.EventSubjectToken, t.ID, root, t)); err != nil {
		return err
	}
	return tx.Commit()
}

// Authenticate resolves a token secret to an actor. Grants are read in the
// same snapshot on every call: there is no cache to invalidate, so a revoke
// takes effect on the very next request.
func (s *UserService) Authenticate(ctx context.Context, secret string) (_ *herd.Actor, err error) {
	defer wrapOp("sqldb.Authenticate", &err)
	unauth := herd.Errorf(herd.EUNAUTHORIZED, "invalid or revoked token")
	if !herd.IsTokenSecret(secret) {
		return nil, unauth
	}
	tx, err := s.db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	a, err := tx.actorOfTokenHash(ctx, hashToken(secret), apiTokens)
	if err == nil && a == nil {
		return nil, unauth
	}
	return a, err
}

// tokenKind says which rows of tokens a lookup by hash takes.
type tokenKind int

const (
	apiTokens     tokenKind = iota // a bearer token: API tokens, and the super-admin's
	sessionTokens                  // the session cookie: sessions only
	anyToken                       // a stream ticket's: the token it was issued to, whichever
)

// actorOfTokenHash reads the actor of the token (a user's or the
// super-admin's) whose hash is hash, with its grants as they are now; nil
// when no token of the kind has it, it has expired or its user is
// disabled. Bearer tokens, session cookies and socket tickets all end here.
func (tx *Tx) actorOfTokenHash(ctx context.Context, hash string, kind tokenKind) (*herd.Actor, error) {
	var a herd.Actor
	var disabled, session bool
	var expires sql.NullInt64
	// The user's disabled flag by a scalar subquery on its primary key, not
	// a join: one index lookup each, whatever the planner knows.
	err := tx.QueryRowContext(ctx, `SELECT id, tenant_id, user_id, session, expires_at, (SELECT disabled FROM users WHERE users.id = tokens.user_id AND users.tenant_id = tokens.tenant_id) FROM tokens WHERE hash = ?`, hash).
		Scan(&a.TokenID, &a.TenantID, &a.UserID, &session, &expires, &disabled)
	if err == nil && (disabled || (kind == apiTokens && session) || (kind == sessionTokens && !session) || (expires.Valid && expires.Int64 <= tx.now.UnixMilli())) {
		// A disabled user's token, an expired session or one of the wrong
		// kind is as good as none: the same answer as for a revoked one,
		// so a caller learns nothing more from it.
		return nil, nil
	}
	if errors.Is(err, sql.ErrNoRows) && kind == sessionTokens {
		return nil, nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		var id int64
		err = tx.QueryRowContext(ctx, `SELECT id FROM admin_tokens WHERE hash = ?`, hash).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, nil
		} else if err != nil {
			return nil, err
		}
		return &herd.Actor{Super: true, TokenID: id}, nil
	} else if err != nil {
		return nil, err
	}
	if a.Grants, err = tx.findGrants(ctx, a.TenantID, a.UserID); err != nil {
		return nil, err
	}
	return &a, nil
}

// EnsureAdminToken makes sure a super-admin token exists. On the first
// start it stores secret (or a generated one when secret is empty) and
// returns the secret so the caller can print it once; later it returns "".
func (db *DB) EnsureAdminToken(ctx context.Context, secret string) (created string, err error) {
	defer wrapOp("sqldb.EnsureAdminToken", &err)
	if secret != "" && !herd.IsTokenSecret(secret) {
		return "", fmt.Errorf("admin token must start with %q and carry at least 21 more characters", herd.TokenPrefix)
	}
	tx, err := db.beginTx(ctx)
	if err != nil {
		return "", err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM admin_tokens`).Scan(&n); err != nil {
		return "", err
	}
	if n > 0 {
		return "", nil
	}
	if secret == "" {
		secret = NewTokenSecret()
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO admin_tokens (hash, created_at) VALUES (?, ?)`, hashToken(secret), tx.now.UnixMilli()); err != nil {
		return "", err
	}
	return secret, tx.Commit()
}
