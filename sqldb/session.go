package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/password"
)

// SessionService implements herd.SessionService: passwords in
// user_passwords, sessions as rows of tokens marked session (migration
// 0025).
type SessionService struct {
	db *DB
}

var _ herd.SessionService = (*SessionService)(nil)

// NewSessionService returns the session service of db.
func NewSessionService(db *DB) *SessionService { return &SessionService{db: db} }

// readOnce runs fn in a read transaction.
func (db *DB) readOnce(ctx context.Context, fn func(tx *Tx) error) error {
	tx, err := db.beginRead(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	return fn(tx)
}

// SetPasswordParams sets the argon2id costs of the passwords db hashes from
// now on (tests use cheap ones; password.Default otherwise).
func (db *DB) SetPasswordParams(p password.Params) { db.passwordParams = &p }

func (db *DB) hashParams() password.Params {
	if db.passwordParams != nil {
		return *db.passwordParams
	}
	return password.Default
}

// SetPassword implements herd.SessionService. Who may, and the current
// password, are checked before any hash is made (argon2id's CPU and memory
// are not spent for whoever asks); the hash is made outside the write
// transaction, which no writer should hold SQLite's lock for; and the
// write checks both again under the tenant's lock.
func (s *SessionService) SetPassword(ctx context.Context, userID int64, pw, current string) (err error) {
	defer wrapOp("sqldb.SetPassword", &err)
	a, err := actor(ctx)
	if err != nil {
		return err
	}
	if err := herd.CheckPassword(pw); err != nil {
		return err
	}
	var may passwordReset
	err = s.db.readOnce(ctx, func(tx *Tx) error {
		var err error
		may, err = tx.mayResetPassword(ctx, a, userID)
		return err
	})
	if err != nil {
		return err
	}
	if had := may.had; may.self && had != "" {
		if current == "" {
			return herd.Errorf(herd.EINVALID, "changing your own password needs current_password, the one you have")
		}
		ok, err := password.Verify(had, current)
		if err != nil {
			return fmt.Errorf("check the current password of user %d: %w", userID, err)
		} else if !ok {
			return herd.Errorf(herd.EFORBIDDEN, "current_password is not your password")
		}
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
	// The tenant's lock (a user never changes tenant) orders this against
	// another SetPassword or a rename taking the same login, and the user
	// is read again under it (a rename committed meanwhile moves the login
	// to set).
	if _, err := tx.lockTenantTree(ctx, may.u.TenantID); err != nil {
		return err
	}
	now, err := tx.mayResetPassword(ctx, a, userID)
	if err != nil {
		return err
	} else if now.self != may.self || now.had != may.had {
		return herd.Errorf(herd.ECONFLICT, "the user's password or access changed meanwhile: try again")
	}
	if err := tx.storePassword(ctx, now.u, hash); err != nil {
		return err
	}
	return tx.Commit()
}

// storePassword stores the hash as u's password, under the tenant's lock
// the caller holds: ECONFLICT when another user of the tenant signs in
// with u's name. A new password ends every session of the user, as a
// changed password should (someone who knew the old one is signed out);
// API tokens stay.
func (tx *Tx) storePassword(ctx context.Context, u *herd.User, hash string) error {
	login := herd.FoldText(u.Name)
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM user_passwords WHERE tenant_id = ? AND login = ? AND user_id <> ?`, u.TenantID, login, u.ID).Scan(&n); err != nil {
		return err
	} else if n > 0 {
		return herd.Errorf(herd.ECONFLICT, "another user of the tenant already signs in as %q: rename one of them first", u.Name)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO user_passwords (user_id, tenant_id, login, hash, updated_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (user_id) DO UPDATE SET login = excluded.login, hash = excluded.hash, updated_at = excluded.updated_at`,
		u.ID, u.TenantID, login, hash, tx.now.UnixMilli())
	if err != nil {
		return formatError(err, fmt.Sprintf("another user of the tenant signs in as %q", u.Name))
	}
	if err := tx.endSessions(ctx, u.TenantID, u.ID); err != nil {
		return err
	}
	root, err := tx.rootPath(ctx, u.TenantID)
	if err != nil {
		return err
	}
	ev := newEvent(herd.EventUserPasswordSet, herd.EventSubjectUser, u.ID, root, map[string]any{"id": fmt.Sprint(u.ID), "tenant_id": fmt.Sprint(u.TenantID)})
	return tx.appendEvents(ctx, u.TenantID, ev)
}

// passwordReset is who may set a user's password, as mayResetPassword
// found: the user as read, whether the actor is the user themself, and
// then their hash ("" when they have none).
type passwordReset struct {
	u    *herd.User
	self bool
	had  string
}

// mayResetPassword checks that a may set user id's password: it is the
// user or an admin of the user's tenant's root.
func (tx *Tx) mayResetPassword(ctx context.Context, a *herd.Actor, id int64) (passwordReset, error) {
	u, err := tx.findUser(ctx, a, id)
	if err != nil {
		return passwordReset{}, err
	}
	may := passwordReset{u: u, self: !a.Super && a.UserID == u.ID}
	if !may.self {
		return may, tx.requireTenantAdmin(ctx, a, u.TenantID)
	}
	err = tx.QueryRowContext(ctx, `SELECT hash FROM user_passwords WHERE user_id = ? AND tenant_id = ?`, u.ID, u.TenantID).Scan(&may.had)
	if errors.Is(err, sql.ErrNoRows) {
		err = nil
	}
	return may, err
}

// endSessions ends every session of a user (a new password, a disable).
func (tx *Tx) endSessions(ctx context.Context, tenantID, userID int64) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM tokens WHERE user_id = ? AND tenant_id = ? AND session`, userID, tenantID)
	return err
}

// moveLogin keeps a renamed user's login (their sign-in name) in step with
// their name, under the tenant's lock the rename holds: ECONFLICT when the
// user has a password and another user of the tenant signs in with the new
// name.
func (tx *Tx) moveLogin(ctx context.Context, u *herd.User) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM user_passwords WHERE user_id = ? AND tenant_id = ?`, u.ID, u.TenantID).Scan(&n); err != nil || n == 0 {
		return err // no password, no login to move
	}
	login := herd.FoldText(u.Name)
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM user_passwords WHERE tenant_id = ? AND login = ? AND user_id <> ?`, u.TenantID, login, u.ID).Scan(&n); err != nil {
		return err
	} else if n > 0 {
		return herd.Errorf(herd.ECONFLICT, "another user of the tenant already signs in as %q", u.Name)
	}
	_, err := tx.ExecContext(ctx, `UPDATE user_passwords SET login = ? WHERE user_id = ? AND tenant_id = ?`, login, u.ID, u.TenantID)
	return formatError(err, fmt.Sprintf("another user of the tenant signs in as %q", u.Name))
}

// dummyHash is what a sign-in verifies against when no password is found,
// so that an unknown name costs the time a wrong password does: made once
// a store, with the store's costs.
func (db *DB) dummyHash() (string, error) {
	db.dummy.once.Do(func() {
		db.dummy.hash, db.dummy.err = password.Hash(db.hashParams(), "herd: no such user")
	})
	return db.dummy.hash, db.dummy.err
}

// SignIn implements herd.SessionService. The password is checked outside
// any transaction (argon2id's cost); the session is written in one that
// finds the same hash and an enabled user again, so a sign-in racing a
// password change either fails or has its session ended by it, and one
// racing a disable makes a session that authenticates nothing (the flag
// is read with every request) and that the disable's own sweep or the
// next sign-in's removes.
func (s *SessionService) SignIn(ctx context.Context, tenantID int64, name, pw string) (_ *herd.Session, err error) {
	defer wrapOp("sqldb.SignIn", &err)
	unauth := herd.Errorf(herd.EUNAUTHORIZED, "wrong tenant, name or password")
	login := herd.FoldText(name)
	var userID int64
	var hash string
	var disabled bool
	err = s.db.readOnce(ctx, func(tx *Tx) error {
		return tx.QueryRowContext(ctx, `SELECT p.user_id, p.hash, u.disabled FROM user_passwords p JOIN users u ON u.id = p.user_id AND u.tenant_id = p.tenant_id
			WHERE p.tenant_id = ? AND p.login = ?`, tenantID, login).Scan(&userID, &hash, &disabled)
	})
	found := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	if !found {
		if hash, err = s.db.dummyHash(); err != nil {
			return nil, err
		}
	}
	ok, err := password.Verify(hash, pw)
	if err != nil {
		return nil, fmt.Errorf("check the password of user %d: %w", userID, err)
	}
	if !found || !ok || disabled {
		return nil, unauth
	}
	// A hash made with other costs than the store's now (raised since) is
	// made again, now that the password is known.
	var rehashed string
	if p, _, _, err := password.Parse(hash); err == nil && p != s.db.hashParams() {
		if rehashed, err = password.Hash(s.db.hashParams(), pw); err != nil {
			return nil, err
		}
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	// On PostgreSQL the password's row is held (FOR SHARE) until the
	// session is committed: a SetPassword committing first is seen here
	// (READ COMMITTED reads the row again after the wait), and one coming
	// after waits, then ends this session with the others. SQLite has one
	// writer.
	q := `SELECT p.hash FROM user_passwords p JOIN users u ON u.id = p.user_id AND u.tenant_id = p.tenant_id
		WHERE p.tenant_id = ? AND p.user_id = ? AND NOT u.disabled`
	if tx.db.dialect == Postgres && rehashed != "" {
		q += ` FOR UPDATE OF p` // it is written below: two sign-ins holding FOR SHARE would deadlock there
	} else if tx.db.dialect == Postgres {
		q += ` FOR SHARE OF p`
	}
	var again string
	err = tx.QueryRowContext(ctx, q, tenantID, userID).Scan(&again)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, unauth
	} else if err != nil {
		return nil, err
	}
	if again != hash {
		// Changed since it was read: a new password (which this one is
		// not), or the same one hashed again by a sign-in beside this one.
		if ok, err := password.Verify(again, pw); err != nil || !ok {
			return nil, unauth
		}
		rehashed = ""
	}
	if rehashed != "" {
		if _, err := tx.ExecContext(ctx, `UPDATE user_passwords SET hash = ? WHERE user_id = ? AND tenant_id = ? AND hash = ?`, rehashed, userID, tenantID, hash); err != nil {
			return nil, err
		}
	}
	// The user's ended sessions are swept here, by the user's index, so
	// their rows do not pile up.
	if _, err := tx.ExecContext(ctx, `DELETE FROM tokens WHERE user_id = ? AND tenant_id = ? AND session AND expires_at <= ?`, userID, tenantID, tx.now.UnixMilli()); err != nil {
		return nil, err
	}
	ss := &herd.Session{TenantID: tenantID, UserID: userID, Secret: NewTokenSecret(), CreatedAt: tx.now, ExpiresAt: tx.now.Add(herd.SessionTTL)}
	if ss.ID, err = tx.insertID(ctx, `INSERT INTO tokens (tenant_id, user_id, hash, created_at, session, expires_at) VALUES (?, ?, ?, ?, true, ?)`,
		tenantID, userID, hashToken(ss.Secret), tx.now.UnixMilli(), ss.ExpiresAt.UnixMilli()); err != nil {
		return nil, err
	}
	return ss, tx.Commit()
}

// AuthenticateSession implements herd.SessionService.
func (s *SessionService) AuthenticateSession(ctx context.Context, secret string) (_ *herd.Actor, err error) {
	defer wrapOp("sqldb.AuthenticateSession", &err)
	unauth := herd.Errorf(herd.EUNAUTHORIZED, "invalid or ended session: sign in again")
	if !herd.IsTokenSecret(secret) {
		return nil, unauth
	}
	var a *herd.Actor
	err = s.db.readOnce(ctx, func(tx *Tx) error {
		var err error
		a, err = tx.actorOfTokenHash(ctx, hashToken(secret), sessionTokens)
		return err
	})
	if err == nil && a == nil {
		return nil, unauth
	}
	return a, err
}

// SignOut implements herd.SessionService: the session's row goes, so the
// secret, and any stream opened with a ticket of it, stop at once.
func (s *SessionService) SignOut(ctx context.Context, secret string) (err error) {
	defer wrapOp("sqldb.SignOut", &err)
	if !herd.IsTokenSecret(secret) {
		return nil
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var id, tenantID int64
	// By the secret's hash, as Authenticate finds a token: the secret is
	// what names the tenant here, and the row found says which.
	err = tx.QueryRowContext(ctx, `DELETE FROM tokens WHERE hash = ? AND session RETURNING id, tenant_id`, hashToken(secret)).Scan(&id, &tenantID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	} else if err != nil {
		return err
	}
	// token.deleted makes the tenant's streams read their access again,
	// so one opened with this session's ticket ends now.
	root, err := tx.rootPath(ctx, tenantID)
	if err != nil {
		return err
	}
	if err := tx.appendEvents(ctx, tenantID, newEvent(herd.EventTokenDeleted, herd.EventSubjectToken, id, root, map[string]any{"id": fmt.Sprint(id), "tenant_id": fmt.Sprint(tenantID), "session": true})); err != nil {
		return err
	}
	return tx.Commit()
}
