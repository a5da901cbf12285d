package httpapi

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/herd-iot/herd"
)

// The lists (herd.ListService): every answer is {items, next_cursor}, the
// children's with the node and where the counts came from; ?limit= and
// ?cursor= page them.

func (s *Server) lists() (herd.ListService, error) {
	if s.ListService == nil {
		return nil, herd.Errorf(herd.ENOTFOUND, "lists are not served here")
	}
	return s.ListService, nil
}

// handleTenantList handles GET /v1/tenants (a super-admin's only).
func (s *Server) handleTenantList(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.lists()
	if err != nil {
		return err
	}
	p, err := herd.ParseListQuery(r.URL.Query())
	if err != nil {
		return err
	}
	page, err := svc.FindTenants(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// handleUserList handles GET /v1/users?tenant_id=&node_id=.
func (s *Server) handleUserList(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.lists()
	if err != nil {
		return err
	}
	q, err := herd.ParseUserListQuery(r.URL.Query())
	if err != nil {
		return err
	}
	page, err := svc.FindUsers(r.Context(), q)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// handleTokenList handles GET /v1/users/{id}/tokens: no secrets, which the
// store does not have.
func (s *Server) handleTokenList(w http.ResponseWriter, r *http.Request) error {
	return listOf(s, w, r, herd.ListService.FindTokens)
}

// handleNodeChildren handles GET /v1/nodes/{id}/children.
func (s *Server) handleNodeChildren(w http.ResponseWriter, r *http.Request) error {
	return listOf(s, w, r, herd.ListService.FindChildren)
}

// listOf answers a list of what belongs to the object of the path's {id}.
func listOf[P any](s *Server, w http.ResponseWriter, r *http.Request, find func(herd.ListService, context.Context, int64, herd.ListParams) (P, error)) error {
	svc, err := s.lists()
	if err != nil {
		return err
	}
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	p, err := herd.ParseListQuery(r.URL.Query())
	if err != nil {
		return err
	}
	page, err := find(svc, r.Context(), id, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// handleGrantList handles GET /v1/grants?node_id=: who may see the node.
func (s *Server) handleGrantList(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.lists()
	if err != nil {
		return err
	}
	nodeID, p, err := herd.ParseGrantListQuery(r.URL.Query())
	if err != nil {
		return err
	}
	page, err := svc.FindGrantsByNode(r.Context(), nodeID, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// handleNodeSearch handles GET /v1/nodes?q=.
func (s *Server) handleNodeSearch(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.lists()
	if err != nil {
		return err
	}
	q, err := herd.ParseNodeSearch(r.URL.Query())
	if err != nil {
		return err
	}
	page, err := svc.SearchNodes(r.Context(), q)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

var _ herd.ListService = (*Client)(nil)

// getList reads one page of a list.
func getList[T any](ctx context.Context, c *Client, path string, v url.Values) (*T, error) {
	var page T
	if err := c.do(ctx, http.MethodGet, path, v, nil, &page); err != nil {
		return nil, err
	}
	return &page, nil
}

// FindTenants reads a page of the tenants (super-admin).
func (c *Client) FindTenants(ctx context.Context, p herd.ListParams) (*herd.ListPage[*herd.Tenant], error) {
	return getList[herd.ListPage[*herd.Tenant]](ctx, c, "/v1/tenants", p.Values())
}

// FindUsers reads a page of users.
func (c *Client) FindUsers(ctx context.Context, q herd.UserListQuery) (*herd.ListPage[*herd.User], error) {
	return getList[herd.ListPage[*herd.User]](ctx, c, "/v1/users", q.Values())
}

// FindTokens reads a page of a user's tokens.
func (c *Client) FindTokens(ctx context.Context, userID int64, p herd.ListParams) (*herd.ListPage[*herd.Token], error) {
	return getList[herd.ListPage[*herd.Token]](ctx, c, idPath("/v1/users/%d/tokens", userID), p.Values())
}

// FindChildren reads a page of a node's children.
func (c *Client) FindChildren(ctx context.Context, nodeID int64, p herd.ListParams) (*herd.NodeChildrenPage, error) {
	return getList[herd.NodeChildrenPage](ctx, c, idPath("/v1/nodes/%d/children", nodeID), p.Values())
}

// FindGrantsByNode reads a page of the grants over a node.
func (c *Client) FindGrantsByNode(ctx context.Context, nodeID int64, p herd.ListParams) (*herd.ListPage[*herd.Grant], error) {
	v := p.Values()
	v.Set("node_id", strconv.FormatInt(nodeID, 10))
	return getList[herd.ListPage[*herd.Grant]](ctx, c, "/v1/grants", v)
}

// SearchNodes reads a page of the nodes whose name holds q.Q.
func (c *Client) SearchNodes(ctx context.Context, q herd.NodeSearch) (*herd.ListPage[*herd.Node], error) {
	return getList[herd.ListPage[*herd.Node]](ctx, c, "/v1/nodes", q.Values())
}
