package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/password"
)

// CreatePasswordLink implements herd.SessionService.
func (s *SessionService) CreatePasswordLink(ctx context.Context, userID int64) (_ *herd.PasswordLink, err error) {
	defer wrapOp("sqldb.CreatePasswordLink", &err)
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
	if err := tx.requireTenantAdmin(ctx, a, u.TenantID); err != nil {
		return nil, err
	}
	// A new link ends the user's others, and swept with them are the
	// tenant's links that ended unused.
	if _, err := tx.ExecContext(ctx, `DELETE FROM password_links WHERE tenant_id = ? AND (user_id = ? OR expires_at <= ?)`, u.TenantID, u.ID, tx.now.UnixMilli()); err != nil {
		return nil, err
	}
	l := &herd.PasswordLink{UserID: u.ID, TenantID: u.TenantID, Secret: newSecret(herd.PasswordLinkPrefix), ExpiresAt: tx.now.Add(herd.PasswordLinkTTL)}
	if _, err := tx.ExecContext(ctx, `INSERT INTO password_links (hash, tenant_id, user_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?)`,
		hashToken(l.Secret), l.TenantID, l.UserID, tx.now.UnixMilli(), l.ExpiresAt.UnixMilli()); err != nil {
		return nil, err
	}
	root, err := tx.rootPath(ctx, u.TenantID)
	if err != nil {
		return nil, err
	}
	// The event never carries the secret.
	ev := newEvent(herd.EventUserPasswordLink, herd.EventSubjectUser, u.ID, root, herd.PasswordLink{UserID: l.UserID, TenantID: l.TenantID, ExpiresAt: l.ExpiresAt})
	if err := tx.appendEvents(ctx, u.TenantID, ev); err != nil {
		return nil, err
	}
	return l, tx.Commit()
}

// SetPasswordWithLink implements herd.SessionService. The link is looked
// up before the hash is made (no argon2id for a made-up link), and spent in
// the write: of two uses at once, one sets the password and the other
// finds no link.
func (s *SessionService) SetPasswordWithLink(ctx context.Context, secret, pw string) (err error) {
	defer wrapOp("sqldb.SetPasswordWithLink", &err)
	unauth := herd.Errorf(herd.EUNAUTHORIZED, "unknown, used or expired password link: ask an admin for a new one")
	if !herd.IsPasswordLinkSecret(secret) {
		return unauth
	}
	if err := herd.CheckPassword(pw); err != nil {
		return err
	}
	h := hashToken(secret)
	var expires int64
	err = s.db.readOnce(ctx, func(tx *Tx) error {
		return tx.QueryRowContext(ctx, `SELECT expires_at FROM password_links WHERE hash = ?`, h).Scan(&expires)
	})
	if errors.Is(err, sql.ErrNoRows) || (err == nil && expires <= s.db.Now().UnixMilli()) {
		return unauth
	} else if err != nil {
		return err
	}
	hash, err := password.Hash(s.db.hashParams(), pw)
	if err != nil {
		return err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var tenantID, userID int64
	err = tx.QueryRowContext(ctx, `DELETE FROM password_links WHERE hash = ? RETURNING tenant_id, user_id, expires_at`, h).Scan(&tenantID, &userID, &expires)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && expires <= tx.now.UnixMilli()) {
		return unauth
	} else if err != nil {
		return err
	}
	if _, err := tx.lockTenantTree(ctx, tenantID); err != nil {
		return err
	}
	// The link stands for the admin who made it: the user is read in the
	// link's tenant, as that admin would.
	u, err := tx.findUser(ctx, &herd.Actor{TenantID: tenantID}, userID)
	if err != nil {
		return fmt.Errorf("the user of a password link: %w", err)
	}
	if err := tx.storePassword(ctx, u, hash); err != nil {
		return err
	}
	return tx.Commit()
}
