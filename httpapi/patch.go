package httpapi

import (
	"context"
	"encoding/json"
	"mime"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/herd-iot/herd"
)

// The updates: PATCH /v1/{tenants,nodes,users,devices}/{id} with a JSON
// merge patch (RFC 7396). A member that is absent leaves its field as it
// is; a member names a field to set. null sets a field that is optional on
// create to what create gives without it (a device's name becomes its key,
// its model empty) and is a 400 for a required one. A member that is not a
// field is a 400 naming it, and so is a field that PATCH does not change
// (a device's key, an id, a path, telemetry), the wrong type for a field,
// and a value create would refuse. The store applies the patch whole or
// not at all.
//
// Every GET of one of these objects answers with ETag: "<version>"; a
// PATCH with If-Match: "<version>" applies only if the object is still at
// that version (else 412 precondition_failed), and answers the updated
// object with its new ETag. A replayed answer (Idempotency-Key) is the
// stored body, which holds the version, without the ETag header.

// MergePatchContentType is the media type of a JSON merge patch. PATCH
// takes it and application/json alike.
const MergePatchContentType = "application/merge-patch+json"

// mergePatch is the members of a merge patch, as they came.
type mergePatch map[string]json.RawMessage

// decodeMergePatch reads the body of a PATCH: a JSON object of at most
// MaxBodySize, in a type a merge patch may come as.
func decodeMergePatch(w http.ResponseWriter, r *http.Request) (mergePatch, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != MergePatchContentType && mt != "application/json") {
			w.Header().Set("Accept-Patch", MergePatchContentType)
			return nil, herd.Errorf(EMEDIATYPE, "Content-Type %s is not taken here: send a JSON merge patch (RFC 7396) as %s or application/json; JSON Patch (RFC 6902) is not supported", quoteValue(ct), MergePatchContentType)
		}
	}
	var p mergePatch
	if err := decodeJSON(w, r, MaxBodySize, &p); err != nil {
		return nil, err
	} else if p == nil {
		// null decodes into a map without error; as a merge patch it would
		// delete the whole object.
		return nil, herd.Errorf(herd.EINVALID, "request body must be an object, not null")
	}
	return p, nil
}

// apply calls set for each member in name order, so that of several bad
// members the same one is named every time.
func (p mergePatch) apply(set func(name string, raw json.RawMessage) error) error {
	names := make([]string, 0, len(p))
	for name := range p {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := set(name, p[name]); err != nil {
			return err
		}
	}
	return nil
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

// patchString reads a text member. nullable fields take null as "".
func patchString(name string, raw json.RawMessage, nullable bool) (*string, error) {
	var s string
	if isNull(raw) {
		if !nullable {
			return nil, herd.Errorf(herd.EINVALID, "field %q may not be null: it is required (leave it out to keep it)", name)
		}
		return &s, nil
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, herd.Errorf(herd.EINVALID, "field %q must be a string, not %s", name, memberKind(raw))
	}
	return &s, nil
}

// patchLabels reads the labels member as a merge patch of its own (RFC
// 7396 applied to the labels object): each key given a string is set, each
// key given null removes that label, and keys left out stay; "labels": null
// removes them all. The keys and values are checked with the device.
func patchLabels(raw json.RawMessage) (map[string]*string, bool, error) {
	if isNull(raw) {
		return nil, true, nil
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil || members == nil {
		return nil, false, herd.Errorf(herd.EINVALID, "field \"labels\" must be an object of keys to strings (or null to remove one), not %s", memberKind(raw))
	}
	out := make(map[string]*string, len(members))
	for k, v := range members {
		if isNull(v) {
			out[k] = nil
			continue
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, false, herd.Errorf(herd.EINVALID, "labels.%s must be a string, or null to remove it, not %s", k, memberKind(v))
		}
		out[k] = &s
	}
	return out, false, nil
}

// patchBool reads a true-or-false member; null is refused, so that a
// patch that meant something else cannot, say, enable a user.
func patchBool(name string, raw json.RawMessage) (*bool, error) {
	var b bool
	if isNull(raw) {
		return nil, herd.Errorf(herd.EINVALID, "field %q may not be null: send true or false (leave it out to keep it)", name)
	} else if err := json.Unmarshal(raw, &b); err != nil {
		return nil, herd.Errorf(herd.EINVALID, "field %q must be true or false, not %s", name, memberKind(raw))
	}
	return &b, nil
}

// notPatchable is the error for a member that is a field of the object
// but not one PATCH changes (why says what to do instead), or that is no
// field of it at all.
func notPatchable(name string, obj any, why string) error {
	if !slices.Contains(jsonFields(reflect.TypeOf(obj)), name) {
		return herd.Errorf(herd.EINVALID, "unknown field %q", name)
	} else if why == "" {
		why = "it is not set by a client"
	}
	return herd.Errorf(herd.EINVALID, "field %q cannot be patched: %s", name, why)
}

// jsonFields returns the JSON member names of a struct type.
func jsonFields(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}

// memberKind names the JSON type of a value, for messages.
func memberKind(raw json.RawMessage) string {
	switch s := strings.TrimSpace(string(raw)); {
	case strings.HasPrefix(s, `"`):
		return "a string"
	case strings.HasPrefix(s, "{"):
		return "an object"
	case strings.HasPrefix(s, "["):
		return "an array"
	case s == "true" || s == "false":
		return "a boolean"
	}
	return "a number"
}

// quoteValue quotes a header value for a message, cut short when long.
func quoteValue(s string) string {
	if len(s) > 60 {
		s = s[:60] + "…"
	}
	return strconv.Quote(s)
}

// ETag returns the entity tag of an object at version v: the version in
// quotes, a strong tag.
func ETag(v int64) string { return `"` + strconv.FormatInt(v, 10) + `"` }

// parseIfMatch reads an If-Match header as a version: 0 for an empty
// header or "*" (any version), else the one strong tag it must hold.
// Anything else is EINVALID: a weak tag (W/"3") never matches under
// If-Match's strong comparison, and a list is not what one editor means.
func parseIfMatch(h string) (int64, error) {
	switch h {
	case "", "*":
		return 0, nil
	}
	if len(h) >= 3 && h[0] == '"' && h[len(h)-1] == '"' {
		if v, err := strconv.ParseInt(h[1:len(h)-1], 10, 64); err == nil && v > 0 {
			return v, nil
		}
	}
	return 0, herd.Errorf(herd.EINVALID, "If-Match %s is not one of this API's ETags: send the ETag of your last read of the object, such as %s, or leave it out", quoteValue(h), ETag(1))
}

// patchRequest reads what every PATCH needs: the id, the If-Match version
// and the merge patch.
func patchRequest(w http.ResponseWriter, r *http.Request) (id, ifVersion int64, p mergePatch, err error) {
	if id, err = pathID(r, "id"); err != nil {
		return 0, 0, nil, err
	} else if ifVersion, err = parseIfMatch(r.Header.Get("If-Match")); err != nil {
		return 0, 0, nil, err
	}
	p, err = decodeMergePatch(w, r)
	return id, ifVersion, p, err
}

// writeVersioned answers an object with its version as the ETag.
func writeVersioned(w http.ResponseWriter, v any, version int64) {
	w.Header().Set("ETag", ETag(version))
	writeJSON(w, http.StatusOK, v)
}

// handleDevicePatch handles PATCH /v1/devices/{id}: name, model and
// labels (merged key by key).
func (s *Server) handleDevicePatch(w http.ResponseWriter, r *http.Request) error {
	id, ifVersion, p, err := patchRequest(w, r)
	if err != nil {
		return err
	}
	u := herd.DeviceUpdate{IfVersion: ifVersion}
	if err := p.apply(func(name string, raw json.RawMessage) (err error) {
		switch name {
		case "name":
			u.Name, err = patchString(name, raw, true)
		case "model":
			u.Model, err = patchString(name, raw, true)
		case "key":
			err = notPatchable(name, herd.Device{}, "the key is the device's MQTT identity (its client id and topic level); a device with another key is another device")
		case "labels":
			u.Labels, u.ClearLabels, err = patchLabels(raw)
		case "node_id", "path":
			err = notPatchable(name, herd.Device{}, "move the device with POST /v1/devices/{id}/move")
		default:
			err = notPatchable(name, herd.Device{}, "")
		}
		return err
	}); err != nil {
		return err
	}
	d, err := s.DeviceService.UpdateDevice(r.Context(), id, u)
	if err != nil {
		return err
	}
	writeVersioned(w, d, d.Version)
	return nil
}

// handleNodePatch handles PATCH /v1/nodes/{id}: name and kind.
func (s *Server) handleNodePatch(w http.ResponseWriter, r *http.Request) error {
	id, ifVersion, p, err := patchRequest(w, r)
	if err != nil {
		return err
	}
	u := herd.NodeUpdate{IfVersion: ifVersion}
	if err := p.apply(func(name string, raw json.RawMessage) (err error) {
		switch name {
		case "name":
			u.Name, err = patchString(name, raw, false)
		case "kind":
			u.Kind, err = patchString(name, raw, false)
		case "parent_id", "path":
			err = notPatchable(name, herd.Node{}, "move the node with POST /v1/nodes/{id}/move")
		default:
			err = notPatchable(name, herd.Node{}, "")
		}
		return err
	}); err != nil {
		return err
	}
	n, err := s.NodeService.UpdateNode(r.Context(), id, u)
	if err != nil {
		return err
	}
	writeVersioned(w, n, n.Version)
	return nil
}

// handleUserPatch handles PATCH /v1/users/{id}: name and disabled.
func (s *Server) handleUserPatch(w http.ResponseWriter, r *http.Request) error {
	id, ifVersion, p, err := patchRequest(w, r)
	if err != nil {
		return err
	}
	u := herd.UserUpdate{IfVersion: ifVersion}
	if err := p.apply(func(name string, raw json.RawMessage) (err error) {
		switch name {
		case "name":
			u.Name, err = patchString(name, raw, false)
		case "disabled":
			u.Disabled, err = patchBool(name, raw)
		default:
			err = notPatchable(name, herd.User{}, "")
		}
		return err
	}); err != nil {
		return err
	}
	usr, err := s.UserService.UpdateUser(r.Context(), id, u)
	if err != nil {
		return err
	}
	writeVersioned(w, usr, usr.Version)
	return nil
}

// handleTenantPatch handles PATCH /v1/tenants/{id}: its name.
func (s *Server) handleTenantPatch(w http.ResponseWriter, r *http.Request) error {
	id, ifVersion, p, err := patchRequest(w, r)
	if err != nil {
		return err
	}
	u := herd.TenantUpdate{IfVersion: ifVersion}
	if err := p.apply(func(name string, raw json.RawMessage) (err error) {
		switch name {
		case "name":
			u.Name, err = patchString(name, raw, false)
		case "root_node_id":
			err = notPatchable(name, herd.Tenant{}, "the root node is the tenant's for good (rename it with PATCH /v1/nodes/{id})")
		default:
			err = notPatchable(name, herd.Tenant{}, "")
		}
		return err
	}); err != nil {
		return err
	}
	t, err := s.TenantService.UpdateTenant(r.Context(), id, u)
	if err != nil {
		return err
	}
	writeVersioned(w, t, t.Version)
	return nil
}

// patch sends a merge patch of the members set, conditional on ifVersion
// when it is not zero.
func (c *Client) patch(ctx context.Context, path string, ifVersion int64, members map[string]any, out any) error {
	h := http.Header{"Content-Type": {MergePatchContentType}}
	if ifVersion != 0 {
		h.Set("If-Match", ETag(ifVersion))
	}
	return c.doHeader(ctx, http.MethodPatch, path, nil, h, members, out)
}

// setMember adds a member for each field that is set.
func setMember[T any](m map[string]any, name string, v *T) {
	if v != nil {
		m[name] = *v
	}
}

// UpdateDevice changes a device's name or model.
func (c *Client) UpdateDevice(ctx context.Context, deviceID int64, u herd.DeviceUpdate) (*herd.Device, error) {
	m := map[string]any{}
	setMember(m, "name", u.Name)
	setMember(m, "model", u.Model)
	switch {
	case u.ClearLabels && len(u.Labels) > 0:
		// A merge patch clears the labels (null) or merges keys, not both.
		return nil, herd.Errorf(herd.EINVALID, "labels: clearing and setting labels in one update is not possible over HTTP; remove the keys one by one (null) instead")
	case u.ClearLabels:
		m["labels"] = nil
	case u.Labels != nil:
		m["labels"] = u.Labels
	}
	var d herd.Device
	if err := c.patch(ctx, idPath("/v1/devices/%d", deviceID), u.IfVersion, m, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// UpdateNode changes a node's name or kind.
func (c *Client) UpdateNode(ctx context.Context, nodeID int64, u herd.NodeUpdate) (*herd.Node, error) {
	m := map[string]any{}
	setMember(m, "name", u.Name)
	setMember(m, "kind", u.Kind)
	var n herd.Node
	if err := c.patch(ctx, idPath("/v1/nodes/%d", nodeID), u.IfVersion, m, &n); err != nil {
		return nil, err
	}
	return &n, nil
}

// UpdateUser renames, disables or enables a user.
func (c *Client) UpdateUser(ctx context.Context, userID int64, u herd.UserUpdate) (*herd.User, error) {
	m := map[string]any{}
	setMember(m, "name", u.Name)
	setMember(m, "disabled", u.Disabled)
	var usr herd.User
	if err := c.patch(ctx, idPath("/v1/users/%d", userID), u.IfVersion, m, &usr); err != nil {
		return nil, err
	}
	return &usr, nil
}

// UpdateTenant renames a tenant.
func (c *Client) UpdateTenant(ctx context.Context, tenantID int64, u herd.TenantUpdate) (*herd.Tenant, error) {
	m := map[string]any{}
	setMember(m, "name", u.Name)
	var t herd.Tenant
	if err := c.patch(ctx, idPath("/v1/tenants/%d", tenantID), u.IfVersion, m, &t); err != nil {
		return nil, err
	}
	return &t, nil
}
