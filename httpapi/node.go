package httpapi

import (
	"context"
	"net/http"

	"github.com/herd-iot/herd"
)

type nodeCreateRequest struct {
	TenantID id     `json:"tenant_id,omitempty"`
	ParentID id     `json:"parent_id,omitempty"`
	Kind     string `json:"kind"`
	Name     string `json:"name"`
}

type nodeMoveRequest struct {
	ParentID id `json:"parent_id"`
}

// handleNodeCreate handles POST /v1/nodes. Without parent_id the node goes
// under the root of tenant_id.
func (s *Server) handleNodeCreate(w http.ResponseWriter, r *http.Request) {
	var req nodeCreateRequest
	if err := decodeJSON(w, r, MaxBodySize, &req); err != nil {
		Error(w, r, err)
		return
	}
	n := &herd.Node{TenantID: int64(req.TenantID), ParentID: int64(req.ParentID), Kind: req.Kind, Name: req.Name}
	if err := s.NodeService.CreateNode(r.Context(), n); err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, n)
}

// handleNodeView handles GET /v1/nodes/{id}.
func (s *Server) handleNodeView(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	n, err := s.NodeService.FindNodeByID(r.Context(), id)
	if err != nil {
		Error(w, r, err)
		return
	}
	writeVersioned(w, n, n.Version)
}

// handleNodeMove handles POST /v1/nodes/{id}/move: the subtree moves under
// parent_id, and the paths of its nodes and devices follow.
func (s *Server) handleNodeMove(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id")
	if err != nil {
		Error(w, r, err)
		return
	}
	var req nodeMoveRequest
	if err := decodeJSON(w, r, MaxBodySize, &req); err != nil {
		Error(w, r, err)
		return
	} else if req.ParentID == 0 {
		Error(w, r, herd.Errorf(herd.EINVALID, "parent_id is required"))
		return
	}
	n, err := s.NodeService.MoveNode(r.Context(), id, int64(req.ParentID))
	if err != nil {
		Error(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, n)
}

var _ herd.NodeService = (*Client)(nil)

// CreateNode creates a node and fills in n from the answer.
func (c *Client) CreateNode(ctx context.Context, n *herd.Node) error {
	req := nodeCreateRequest{TenantID: id(n.TenantID), ParentID: id(n.ParentID), Kind: n.Kind, Name: n.Name}
	return c.do(ctx, http.MethodPost, "/v1/nodes", nil, req, n)
}

// FindNodeByID returns a node.
func (c *Client) FindNodeByID(ctx context.Context, nodeID int64) (*herd.Node, error) {
	var n herd.Node
	if err := c.do(ctx, http.MethodGet, idPath("/v1/nodes/%d", nodeID), nil, nil, &n); err != nil {
		return nil, err
	}
	return &n, nil
}

// MoveNode moves the subtree rooted at nodeID under parentID.
func (c *Client) MoveNode(ctx context.Context, nodeID, parentID int64) (*herd.Node, error) {
	var n herd.Node
	if err := c.do(ctx, http.MethodPost, idPath("/v1/nodes/%d/move", nodeID), nil, nodeMoveRequest{ParentID: id(parentID)}, &n); err != nil {
		return nil, err
	}
	return &n, nil
}
