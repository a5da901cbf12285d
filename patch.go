package herd

import (
	"maps"
	"strconv"
)

// Versions. Every tenant, node, user and device has a version: 1 when it
// is created, one more on each change of its metadata (what an update
// sets: names, kinds, models, disabled). It does not move with telemetry,
// connectivity or a move, which are the device's own state or its place,
// not something two consoles edit; devices.rev, which changes with all of
// them, is the state cache's change counter and no version. The HTTP API
// shows it as the object's ETag, and an update may be made conditional on
// it (If-Match), so that two editors of one object do not overwrite each
// other without knowing.

// CheckVersion returns EPRECONDITION when want is set (not zero) and the
// object of that kind and id is at version have instead.
func CheckVersion(kind string, id, have, want int64) error {
	if want != 0 && want != have {
		return Errorf(EPRECONDITION, "%s %d is at version %d, not %d: someone changed it since you read it; read it again and repeat the change if it still stands", kind, id, have, want)
	}
	return nil
}

// An update names the fields to change; a nil field is left as it is. Each
// update is validated as a create is, on the object as it would become,
// and applied whole or not at all; an update that changes nothing writes
// nothing (no version, no event). IfVersion, when not zero, makes it
// conditional: EPRECONDITION unless the object is still at that version.

// DeviceUpdate is a change to a device's metadata. The key is the device's
// MQTT identity and never changes; its node changes by MoveDevice.
//
// Labels are a map member whose merge is by key (RFC 7396: a null value
// removes the key), so they are a map of *string here, not a replacement
// of the whole set.
type DeviceUpdate struct {
	// Name, set to "", becomes the key, as on create.
	Name  *string
	Model *string
	// Labels sets each key given to its value and removes each key given
	// nil; ClearLabels ("labels": null) removes every label first.
	Labels      map[string]*string
	ClearLabels bool
	IfVersion   int64
}

// Apply sets the update's fields on d, validates the result as a new
// device is validated, and returns the names of the fields that changed.
// On an error d is unchanged.
func (u DeviceUpdate) Apply(d *Device) ([]string, error) {
	next := *d
	if u.Name != nil {
		next.Name = *u.Name
	}
	if u.Model != nil {
		next.Model = *u.Model
	}
	if u.Labels != nil || u.ClearLabels {
		next.Labels = MergeLabels(d.Labels, u.Labels, u.ClearLabels)
	}
	if err := next.Validate(); err != nil {
		return nil, err
	}
	var changed []string
	changed = appendChanged(changed, "name", d.Name, next.Name)
	changed = appendChanged(changed, "model", d.Model, next.Model)
	if !maps.Equal(d.Labels, next.Labels) {
		changed = append(changed, "labels")
	}
	*d = next
	return changed, nil
}

// NodeUpdate is a change to a node's name or kind. Its place in the tree
// changes by MoveNode.
type NodeUpdate struct {
	Name      *string
	Kind      *string
	IfVersion int64
}

// Apply is DeviceUpdate.Apply for a node.
func (u NodeUpdate) Apply(n *Node) ([]string, error) {
	next := *n
	if u.Name != nil {
		next.Name = *u.Name
	}
	if u.Kind != nil {
		next.Kind = *u.Kind
	}
	if err := next.Validate(); err != nil {
		return nil, err
	}
	var changed []string
	changed = appendChanged(changed, "name", n.Name, next.Name)
	changed = appendChanged(changed, "kind", n.Kind, next.Kind)
	*n = next
	return changed, nil
}

// UserUpdate is a change to a user: its name, or whether it is disabled.
// A disabled user's tokens stop authenticating at once (its event streams
// close at once, its app sockets at their next check of the token, within
// 10 s); enabling it again brings back the same tokens and grants.
type UserUpdate struct {
	Name      *string
	Disabled  *bool
	IfVersion int64
}

// Apply is DeviceUpdate.Apply for a user.
func (u UserUpdate) Apply(usr *User) ([]string, error) {
	next := *usr
	if u.Name != nil {
		next.Name = *u.Name
	}
	if u.Disabled != nil {
		next.Disabled = *u.Disabled
	}
	if err := next.Validate(); err != nil {
		return nil, err
	}
	var changed []string
	changed = appendChanged(changed, "name", usr.Name, next.Name)
	changed = appendChanged(changed, "disabled", strconv.FormatBool(usr.Disabled), strconv.FormatBool(next.Disabled))
	*usr = next
	return changed, nil
}

// TenantUpdate is a change to a tenant's name. The name of its root node
// is the root node's own (NodeUpdate), set from the tenant's at creation
// only.
type TenantUpdate struct {
	Name      *string
	IfVersion int64
}

// Apply is DeviceUpdate.Apply for a tenant.
func (u TenantUpdate) Apply(t *Tenant) ([]string, error) {
	next := *t
	if u.Name != nil {
		next.Name = *u.Name
	}
	if err := next.Validate(); err != nil {
		return nil, err
	}
	var changed []string
	changed = appendChanged(changed, "name", t.Name, next.Name)
	*t = next
	return changed, nil
}

func appendChanged(changed []string, field, old, new string) []string {
	if old != new {
		return append(changed, field)
	}
	return changed
}
