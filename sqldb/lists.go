package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/herd-iot/herd"
)

// ListService implements herd.ListService: the keyset-paged lists of
// tenants, users, tokens, a node's children, a node's grants and the node
// search. Each runs in one read transaction and states its tenant in every
// statement (the tenants list, a super-admin's, has none to state).
type ListService struct {
	db *DB
	// searchBatch is how many nodes a search reads at a time; zero is
	// nodeSearchBatch. Tests shrink it to page through many batches.
	searchBatch int
}

var _ herd.ListService = (*ListService)(nil)

// NewListService returns a ListService on db.
func NewListService(db *DB) *ListService { return &ListService{db: db} }

// Cursor kinds of the lists: each list signs its own, so a cursor of one is
// never taken by another.
const (
	listTenants  = "tenants"
	listUsers    = "users"
	listTokens   = "tokens"
	listChildren = "children"
	listGrants   = "grants"
	listNodes    = "nodes"
)

// listKey is the key that signs the actor's list cursors: the store's key
// for the actor's grants, as the device query's cursors are signed, so a
// cursor is refused by anyone with other grants and after a grant or
// revoke of the actor's own.
func (db *DB) listKey(a *herd.Actor) herd.CursorKey {
	return db.cursorKey.For(a.Scope(herd.RoleViewer))
}

// openList checks the params and returns the position their cursor
// carries (the zero position for the first page).
func (db *DB) openList(a *herd.Actor, p *herd.ListParams, kind, bind string) (herd.ListPosition, error) {
	if err := p.Normalize(); err != nil {
		return herd.ListPosition{}, err
	} else if p.Cursor == "" {
		return herd.ListPosition{}, nil
	}
	return herd.DecodeListCursor(db.listKey(a), kind, bind, p.Cursor)
}

// finishList makes the page of items, read with one more than limit to
// know whether a next page exists: cut to limit, with the cursor of the
// last item kept.
func finishList[T any](db *DB, a *herd.Actor, kind, bind string, items []T, limit int, pos func(T) herd.ListPosition) *herd.ListPage[T] {
	page := &herd.ListPage[T]{Items: items}
	if len(items) > limit {
		page.Items = items[:limit]
		page.NextCursor = herd.EncodeListCursor(db.listKey(a), kind, bind, pos(items[limit-1]))
	}
	if page.Items == nil {
		page.Items = []T{} // an empty list, not null
	}
	return page
}

// collectRows scans every row of rows.
func collectRows[T any](rows *sql.Rows, scan func(rowScanner) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// FindTenants lists every tenant, for a super-admin only: anyone else is
// refused with EFORBIDDEN, as creating a tenant is (the list exists for
// every caller; what it holds is no caller's but the operator's).
func (s *ListService) FindTenants(ctx context.Context, p herd.ListParams) (_ *herd.ListPage[*herd.Tenant], err error) {
	defer wrapOp("sqldb.FindTenants", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.ListPage[*herd.Tenant], error) {
		if !a.Super {
			return nil, herd.Errorf(herd.EFORBIDDEN, "only a super-admin may list tenants")
		}
		pos, err := s.db.openList(a, &p, listTenants, "")
		if err != nil {
			return nil, err
		}
		rows, err := tx.QueryContext(ctx, `SELECT id, name, root_node_id, created_at, version FROM tenants WHERE id > ? ORDER BY id LIMIT ?`, pos.ID, p.Limit+1)
		if err != nil {
			return nil, err
		}
		items, err := collectRows(rows, func(r rowScanner) (*herd.Tenant, error) {
			var t herd.Tenant
			var root sql.NullInt64
			var created int64
			if err := r.Scan(&t.ID, &t.Name, &root, &created, &t.Version); err != nil {
				return nil, err
			}
			t.RootNodeID, t.CreatedAt = root.Int64, msToTime(created)
			return &t, nil
		})
		if err != nil {
			return nil, err
		}
		return finishList(s.db, a, listTenants, "", items, p.Limit, func(t *herd.Tenant) herd.ListPosition { return herd.ListPosition{ID: t.ID} }), nil
	})
}

// FindUsers lists users. Who sees whom: a super-admin and an admin of the
// tenant's root, every user of the tenant; an admin of other nodes, the
// users holding a grant on a node under one of their admin grants; with
// q.NodeID, an admin of that node, the users holding a grant on it or
// under it. A viewer or operator only is refused (EFORBIDDEN), as listing
// another user's grants is.
func (s *ListService) FindUsers(ctx context.Context, q herd.UserListQuery) (_ *herd.ListPage[*herd.User], err error) {
	defer wrapOp("sqldb.FindUsers", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.ListPage[*herd.User], error) {
		tenantID, err := tx.listTenant(ctx, a, q.TenantID)
		if err != nil {
			return nil, err
		}
		// paths are the subtrees whose grant holders are listed; nil
		// lists every user of the tenant.
		var paths []string
		if q.NodeID != 0 {
			n, err := tx.findNode(ctx, a, q.NodeID)
			if err != nil {
				return nil, err
			} else if n.TenantID != tenantID {
				return nil, herd.Errorf(herd.ENOTFOUND, "node %d not found", q.NodeID)
			} else if !a.Allows(n.TenantID, n.Path, herd.RoleAdmin) {
				return nil, herd.Errorf(herd.EFORBIDDEN, "admin role on node %d required", n.ID)
			}
			paths = []string{n.Path}
		} else if !a.Super {
			root, err := tx.rootPath(ctx, tenantID)
			if err != nil {
				return nil, err
			}
			if !a.Allows(tenantID, root, herd.RoleAdmin) {
				if paths = a.Scope(herd.RoleAdmin).Paths; len(paths) == 0 {
					return nil, herd.Errorf(herd.EFORBIDDEN, "listing users needs the admin role on a node")
				}
			}
		}
		bind := fmt.Sprintf("t=%d&n=%d", tenantID, q.NodeID)
		pos, err := s.db.openList(a, &q.ListParams, listUsers, bind)
		if err != nil {
			return nil, err
		}
		sqlText := `SELECT id, tenant_id, name, disabled, created_at, version FROM users WHERE tenant_id = ? AND id > ?`
		args := []any{tenantID, pos.ID}
		if paths != nil {
			// The grants of a user are few (herd.MaxGrantsPerUser): the
			// EXISTS reads them by grants_user_node, per user in id order.
			var b strings.Builder
			b.WriteString(` AND EXISTS (SELECT 1 FROM grants g JOIN nodes n ON n.id = g.node_id AND n.tenant_id = g.tenant_id WHERE g.user_id = users.id AND g.tenant_id = ? AND (`)
			args = append(args, tenantID)
			for i, p := range paths {
				if i > 0 {
					b.WriteString(" OR ")
				}
				b.WriteString("(n.path >= ? AND n.path < ?)")
				args = append(args, p, herd.PathUpperBound(p))
			}
			b.WriteString("))")
			sqlText += b.String()
		}
		rows, err := tx.QueryContext(ctx, sqlText+` ORDER BY id LIMIT ?`, append(args, q.Limit+1)...)
		if err != nil {
			return nil, err
		}
		items, err := collectRows(rows, func(r rowScanner) (*herd.User, error) {
			var u herd.User
			var created int64
			if err := r.Scan(&u.ID, &u.TenantID, &u.Name, &u.Disabled, &created, &u.Version); err != nil {
				return nil, err
			}
			u.CreatedAt = msToTime(created)
			return &u, nil
		})
		if err != nil {
			return nil, err
		}
		return finishList(s.db, a, listUsers, bind, items, q.Limit, func(u *herd.User) herd.ListPosition { return herd.ListPosition{ID: u.ID} }), nil
	})
}

// listTenant is the tenant a list of tenant-wide things is of: the one a
// super-admin names, or the user's own (naming another is ENOTFOUND).
func (tx *Tx) listTenant(ctx context.Context, a *herd.Actor, tenantID int64) (int64, error) {
	if a.Super {
		if tenantID == 0 {
			return 0, herd.Errorf(herd.EINVALID, "tenant_id is required for a super-admin")
		}
		if _, err := tx.findTenant(ctx, tenantID); err != nil {
			return 0, err
		}
		return tenantID, nil
	} else if tenantID != 0 && tenantID != a.TenantID {
		return 0, herd.Errorf(herd.ENOTFOUND, "tenant %d not found", tenantID)
	}
	return a.TenantID, nil
}

// FindTokens lists a user's tokens without their secrets (the store has
// only their hashes): the user's own, or any user's for an admin of the
// tenant's root, as creating one is.
func (s *ListService) FindTokens(ctx context.Context, userID int64, p herd.ListParams) (_ *herd.ListPage[*herd.Token], err error) {
	defer wrapOp("sqldb.FindTokens", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.ListPage[*herd.Token], error) {
		u, err := tx.findUser(ctx, a, userID)
		if err != nil {
			return nil, err
		}
		if a.Super || a.UserID != u.ID {
			if err := tx.requireTenantAdmin(ctx, a, u.TenantID); err != nil {
				return nil, err
			}
		}
		bind := "u=" + strconv.FormatInt(u.ID, 10)
		pos, err := s.db.openList(a, &p, listTokens, bind)
		if err != nil {
			return nil, err
		}
		rows, err := tx.QueryContext(ctx, `SELECT id, tenant_id, user_id, created_at FROM tokens WHERE user_id = ? AND tenant_id = ? AND NOT session AND id > ? ORDER BY id LIMIT ?`,
			u.ID, u.TenantID, pos.ID, p.Limit+1)
		if err != nil {
			return nil, err
		}
		items, err := collectRows(rows, func(r rowScanner) (*herd.Token, error) {
			var t herd.Token
			var created int64
			if err := r.Scan(&t.ID, &t.TenantID, &t.UserID, &created); err != nil {
				return nil, err
			}
			t.CreatedAt = msToTime(created)
			return &t, nil
		})
		if err != nil {
			return nil, err
		}
		return finishList(s.db, a, listTokens, bind, items, p.Limit, func(t *herd.Token) herd.ListPosition { return herd.ListPosition{ID: t.ID} }), nil
	})
}

// FindGrantsByNode lists the grants on the node and on each of its
// ancestors: who may see the node. Only an admin of the node may ask, as
// only they may grant it.
func (s *ListService) FindGrantsByNode(ctx context.Context, nodeID int64, p herd.ListParams) (_ *herd.ListPage[*herd.Grant], err error) {
	defer wrapOp("sqldb.FindGrantsByNode", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.ListPage[*herd.Grant], error) {
		n, err := tx.findNode(ctx, a, nodeID)
		if err != nil {
			return nil, err
		} else if !a.Allows(n.TenantID, n.Path, herd.RoleAdmin) {
			return nil, herd.Errorf(herd.EFORBIDDEN, "admin role on node %d required", n.ID)
		}
		bind := "n=" + strconv.FormatInt(n.ID, 10)
		pos, err := s.db.openList(a, &p, listGrants, bind)
		if err != nil {
			return nil, err
		}
		ids, err := herd.PathIDs(n.Path)
		if err != nil {
			return nil, err
		}
		// The path's ids are the node and its ancestors: a tree's depth,
		// far below MaxQueryParams.
		args := []any{n.TenantID}
		for _, id := range ids {
			args = append(args, id)
		}
		args = append(args, pos.ID, p.Limit+1)
		rows, err := tx.QueryContext(ctx, grantSelect+` WHERE g.tenant_id = ? AND g.node_id IN (`+placeholders(len(ids))+`) AND g.id > ? ORDER BY g.id LIMIT ?`, args...)
		if err != nil {
			return nil, err
		}
		items, err := collectRows(rows, scanGrant)
		if err != nil {
			return nil, err
		}
		return finishList(s.db, a, listGrants, bind, items, p.Limit, func(g *herd.Grant) herd.ListPosition { return herd.ListPosition{ID: g.ID} }), nil
	})
}

// placeholders returns n comma-separated "?".
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

// nodeAncestors reads the breadcrumb of n: its ancestors' ids and names,
// root first, and nothing else of them (the caller may be granted n and
// not them).
func (tx *Tx) nodeAncestors(ctx context.Context, n *herd.Node) ([]herd.NodeRef, error) {
	ids, err := herd.PathIDs(n.Path)
	if err != nil {
		return nil, err
	}
	ids = ids[:len(ids)-1] // the last is n itself
	if len(ids) == 0 {
		return []herd.NodeRef{}, nil
	}
	args := []any{n.TenantID}
	for _, id := range ids {
		args = append(args, id)
	}
	rows, err := tx.QueryContext(ctx, `SELECT id, name FROM nodes WHERE tenant_id = ? AND id IN (`+placeholders(len(ids))+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("read ancestors: %w", err)
	}
	names := map[int64]string{}
	for rows.Next() {
		var id int64
		var name string
		if err := rows.Scan(&id, &name); err != nil {
			rows.Close()
			return nil, err
		}
		names[id] = name
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, err
	}
	out := make([]herd.NodeRef, 0, len(ids))
	for _, id := range ids {
		name, ok := names[id]
		if !ok {
			return nil, fmt.Errorf("ancestor %d of node %d is missing", id, n.ID)
		}
		out = append(out, herd.NodeRef{ID: id, Name: name})
	}
	return out, nil
}
