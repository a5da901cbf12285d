package herd

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The lists a console browses by: tenants, users, a user's tokens, a
// node's children with their device counts, who may see a node, and nodes
// found by name. Every list is keyset-paged: ?limit= (1 to MaxListLimit,
// default DefaultListLimit) and ?cursor=, the next_cursor of the page
// before, empty on the last page. A cursor is signed by the store for the
// caller's grants and the list's parameters (see EncodeListCursor), so a
// client can hold it and send it back, never make or edit one.

// Limits of a list page.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
	// MinNodeSearchLen is the shortest q= of a node search, in characters:
	// shorter text matches most of a tree and says little.
	MinNodeSearchLen = 3
	maxListCursorLen = 1024
)

// ListParams is the paging of one request of a list.
type ListParams struct {
	// Limit is the most items of the page; zero takes DefaultListLimit.
	Limit int
	// Cursor is the next_cursor of the page before, as the client sent
	// it; empty for the first page.
	Cursor string
}

// ListPage is one page of a list. NextCursor, when not empty, continues it.
type ListPage[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor"`
}

// NodeRef is the most herd shows of a node outside the caller's grants:
// the ancestors of a granted node, as a breadcrumb.
type NodeRef struct {
	ID   int64  `json:"id,string"`
	Name string `json:"name"`
}

// NodeChild is one child of a node with the counts of its whole subtree.
// A device is in alarm when the status it last reported is StatusAlarm;
// online is Device.Online.
type NodeChild struct {
	Node
	DeviceCount int64 `json:"device_count"`
	OnlineCount int64 `json:"online_count"`
	AlarmCount  int64 `json:"alarm_count"`
	// ChildCount is the number of the child's own children, so a tree
	// view knows which nodes open.
	ChildCount int64 `json:"child_count"`
}

// NodeChildrenPage is a page of a node's children, ordered by name and id,
// with the node itself (and its ancestors' breadcrumb) on every page.
type NodeChildrenPage struct {
	Node       *Node        `json:"node"`
	Items      []*NodeChild `json:"items"`
	NextCursor string       `json:"next_cursor"`
	// Source is where the device counts were read: "state_cache",
	// "devices", or "none" when no child was listed.
	Source string `json:"source"`
}

// UserListQuery is GET /v1/users: the users of a tenant (TenantID picks it
// for a super-admin), or, with NodeID, those holding a grant on that node
// or under it.
type UserListQuery struct {
	TenantID int64
	NodeID   int64
	ListParams
}

// NodeSearch is GET /v1/nodes?q=: the nodes within the caller's grants
// whose name holds Q, case-insensitively (TenantID picks the tenant for a
// super-admin).
type NodeSearch struct {
	TenantID int64
	Q        string
	ListParams
}

// ListService serves the lists. Each returns EINVALIDLIMIT for a limit out
// of range and EINVALIDCURSOR for a cursor it did not issue to this caller
// for this same list.
type ListService interface {
	// FindTenants lists every tenant by id. Returns EFORBIDDEN unless the
	// actor is a super-admin: the list is of all customers.
	FindTenants(ctx context.Context, p ListParams) (*ListPage[*Tenant], error)
	// FindUsers lists users by id. A super-admin and an admin of the
	// tenant's root see every user of the tenant; an admin of other nodes
	// sees the users holding a grant on a node they administer or under
	// it. With q.NodeID, only users holding a grant on that node or under
	// it, for an admin of the node. Returns EFORBIDDEN for an actor with no
	// admin grant (or none on q.NodeID), ENOTFOUND for another tenant or a
	// node outside the actor's grants.
	FindUsers(ctx context.Context, q UserListQuery) (*ListPage[*User], error)
	// FindTokens lists a user's tokens by id, without their secrets: the
	// user's own, or anyone's of the tenant for an admin of its root.
	// Returns ENOTFOUND for a user of another tenant, EFORBIDDEN otherwise.
	FindTokens(ctx context.Context, userID int64, p ListParams) (*ListPage[*Token], error)
	// FindChildren lists a node's direct children by name and id, each
	// with the counts of its subtree. Returns ENOTFOUND when the node is
	// outside the actor's grants, its ancestors included: of those the
	// actor sees the breadcrumb only.
	FindChildren(ctx context.Context, nodeID int64, p ListParams) (*NodeChildrenPage, error)
	// FindGrantsByNode lists the grants on the node and on its ancestors
	// by id: every user who may see the node. Returns ENOTFOUND when the
	// node is outside the actor's grants, EFORBIDDEN unless the actor is
	// an admin of it.
	FindGrantsByNode(ctx context.Context, nodeID int64, p ListParams) (*ListPage[*Grant], error)
	// SearchNodes lists the nodes within the actor's grants whose name
	// holds q.Q, case-insensitively, in path order (a subtree's nodes
	// together, a parent before its children). Returns EINVALID for a q
	// shorter than MinNodeSearchLen characters.
	SearchNodes(ctx context.Context, q NodeSearch) (*ListPage[*Node], error)
}

// ParseListQuery reads the query string of a list that takes the
// parameters named beside limit and cursor: unknown parameters, and any
// given twice, are refused with their names.
func ParseListQuery(v url.Values, names ...string) (ListParams, error) {
	if err := checkHistoryParams(v, append([]string{"limit", "cursor"}, names...)...); err != nil {
		return ListParams{}, err
	}
	return ParseListParams(v)
}

// ParseUserListQuery reads GET /v1/users: tenant_id, node_id, limit and
// cursor.
func ParseUserListQuery(v url.Values) (UserListQuery, error) {
	var q UserListQuery
	var err error
	if q.ListParams, err = ParseListQuery(v, "tenant_id", "node_id"); err != nil {
		return q, err
	} else if q.TenantID, err = parseOptionalID(v, "tenant_id"); err != nil {
		return q, err
	}
	q.NodeID, err = parseOptionalID(v, "node_id")
	return q, err
}

// Values writes the query as ParseUserListQuery reads it.
func (q UserListQuery) Values() url.Values {
	v := q.ListParams.Values()
	if q.TenantID != 0 {
		v.Set("tenant_id", strconv.FormatInt(q.TenantID, 10))
	}
	if q.NodeID != 0 {
		v.Set("node_id", strconv.FormatInt(q.NodeID, 10))
	}
	return v
}

// ParseGrantListQuery reads GET /v1/grants: node_id (required), limit and
// cursor.
func ParseGrantListQuery(v url.Values) (nodeID int64, p ListParams, err error) {
	if p, err = ParseListQuery(v, "node_id"); err != nil {
		return 0, p, err
	} else if nodeID, err = parseOptionalID(v, "node_id"); err != nil {
		return 0, p, err
	} else if nodeID == 0 {
		return 0, p, Errorf(EINVALID, "node_id is required: the grants of which node")
	}
	return nodeID, p, nil
}

// ParseNodeSearch reads GET /v1/nodes: q (required, see CheckNodeSearch),
// tenant_id, limit and cursor.
func ParseNodeSearch(v url.Values) (NodeSearch, error) {
	var q NodeSearch
	var err error
	if q.ListParams, err = ParseListQuery(v, "q", "tenant_id"); err != nil {
		return q, err
	} else if q.TenantID, err = parseOptionalID(v, "tenant_id"); err != nil {
		return q, err
	}
	q.Q, err = CheckNodeSearch(v.Get("q"))
	return q, err
}

// Values writes the search as ParseNodeSearch reads it.
func (q NodeSearch) Values() url.Values {
	v := q.ListParams.Values()
	v.Set("q", q.Q)
	if q.TenantID != 0 {
		v.Set("tenant_id", strconv.FormatInt(q.TenantID, 10))
	}
	return v
}

// ParseListParams reads ?limit= and ?cursor= of a list.
func ParseListParams(v url.Values) (ListParams, error) {
	p := ListParams{Limit: DefaultListLimit}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxListLimit {
			return p, Errorf(EINVALIDLIMIT, "limit %q must be an integer from 1 to %d", s, MaxListLimit)
		}
		p.Limit = n
	}
	if s := v.Get("cursor"); s != "" {
		// Only the store holds the key that checks a cursor; refusing
		// what cannot be one here keeps it from travelling further.
		if len(s) > maxListCursorLen || strings.Trim(s, cursorAlphabet) != "" {
			return p, Errorf(EINVALIDCURSOR, "cursor is malformed")
		}
		p.Cursor = s
	}
	return p, nil
}

// Normalize fills in the default limit and checks the limit, for params
// built in code as ParseListParams checks parsed ones.
func (p *ListParams) Normalize() error {
	if p.Limit == 0 {
		p.Limit = DefaultListLimit
	}
	if p.Limit < 1 || p.Limit > MaxListLimit {
		return Errorf(EINVALIDLIMIT, "limit %d must be from 1 to %d", p.Limit, MaxListLimit)
	}
	return nil
}

// Values writes the params as ParseListParams reads them.
func (p ListParams) Values() url.Values {
	v := url.Values{}
	if p.Limit != 0 {
		v.Set("limit", strconv.Itoa(p.Limit))
	}
	if p.Cursor != "" {
		v.Set("cursor", p.Cursor)
	}
	return v
}

// CheckNodeSearch trims q and checks its length: at least
// MinNodeSearchLen characters, at most MaxNameLen bytes (no name is longer).
func CheckNodeSearch(q string) (string, error) {
	q = strings.TrimSpace(q)
	if utf8.RuneCountInString(q) < MinNodeSearchLen {
		return "", Errorf(EINVALID, "q must be at least %d characters, got %q", MinNodeSearchLen, q)
	} else if len(q) > MaxNameLen || !ValidText(q) {
		return "", Errorf(EINVALID, "q must be valid text of at most %d bytes", MaxNameLen)
	}
	return q, nil
}

// NameMatches reports whether name holds q, folding case as Go's
// strings.ToLower does (Unicode, not only ASCII), the same on every store.
func NameMatches(name, q string) bool {
	return strings.Contains(strings.ToLower(name), strings.ToLower(q))
}

// ListPosition is a keyset position in a list: the sort key of the last
// item of a page (a name or a path; empty for lists ordered by id alone)
// and its id.
type ListPosition struct {
	Key string
	ID  int64
}

type listCursorJSON struct {
	Bind string `json:"b"`
	Key  string `json:"k,omitempty"`
	ID   int64  `json:"i,string"`
}

// EncodeListCursor returns the cursor continuing a list of kind after pos.
// bind names the list's own parameters (its tenant, node, q), so a cursor
// of one list is never taken for another's; k is the store's key for the
// caller's scope (CursorKey.For), so one of another caller is refused.
func EncodeListCursor(k CursorKey, kind, bind string, pos ListPosition) string {
	buf, _ := json.Marshal(listCursorJSON{Bind: bind, Key: pos.Key, ID: pos.ID})
	return k.sign("list:"+kind, base64.RawURLEncoding.EncodeToString(buf))
}

// DecodeListCursor returns the position of a cursor made by
// EncodeListCursor with the same key, kind and bind; anything else is
// EINVALIDCURSOR.
func DecodeListCursor(k CursorKey, kind, bind, s string) (ListPosition, error) {
	bad := Errorf(EINVALIDCURSOR, "cursor is malformed")
	if len(s) > maxListCursorLen {
		return ListPosition{}, bad
	}
	payload, ok := k.verify("list:"+kind, s)
	if !ok {
		return ListPosition{}, Errorf(EINVALIDCURSOR, "cursor was not issued by this store to a caller with your grants for this list, or was changed: page again from the first page")
	}
	buf, err := base64.RawURLEncoding.Strict().DecodeString(payload)
	if err != nil {
		return ListPosition{}, bad
	}
	var c listCursorJSON
	if err := json.Unmarshal(buf, &c); err != nil || c.ID < 0 || !ValidText(c.Key) {
		return ListPosition{}, bad
	}
	if c.Bind != bind {
		return ListPosition{}, Errorf(EINVALIDCURSOR, "cursor belongs to another list: keep the list's parameters unchanged while paging")
	}
	return ListPosition{Key: c.Key, ID: c.ID}, nil
}
