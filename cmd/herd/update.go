package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
)

// objectCommands are the subcommands of herd devices, nodes, users and
// tenants: for now "update", a PATCH of the object.
var objectCommands = map[string]objectCommand{
	"devices": {kind: "device", fields: []objectField{
		{name: "name", usage: "the device's new name (\"\" makes it the key, as on create)"},
		{name: "model", usage: "the device's new model"},
	}},
	"nodes": {kind: "node", fields: []objectField{
		{name: "name", usage: "the node's new name"},
		{name: "kind", usage: "the node's new kind (region, site, …)"},
	}},
	"users": {kind: "user", fields: []objectField{
		{name: "name", usage: "the user's new name"},
		{name: "disabled", bool: true, usage: "true disables the user (its tokens stop working at once), false enables it again"},
	}},
	"tenants": {kind: "tenant", fields: []objectField{
		{name: "name", usage: "the tenant's new name (super-admin only)"},
	}},
}

type objectCommand struct {
	kind   string
	fields []objectField
}

type objectField struct {
	name, usage string
	bool        bool
}

// runObjects is herd devices|nodes|users|tenants update ID [flags]: it
// sends the flags given, and only those, as a merge patch, and prints the
// object's new version (or the object, with --json).
func runObjects(ctx context.Context, group string, args []string, stdout, stderr io.Writer) error {
	oc := objectCommands[group]
	if group == "users" && len(args) > 0 && args[0] == "password" {
		return runUserPassword(ctx, args[1:], stdout, stderr)
	}
	if group == "users" && len(args) > 0 && args[0] == "password-link" {
		return runUserPasswordLink(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "update" {
		if group == "users" {
			return &usageError{msg: "herd users takes a subcommand: update ID [flags], password ID < FILE, or password-link ID"}
		}
		return &usageError{msg: fmt.Sprintf("herd %s takes a subcommand: update ID [flags]", group)}
	}
	args = args[1:]
	fs := flag.NewFlagSet("herd "+group+" update", flag.ContinueOnError)
	fs.SetOutput(stderr)
	api, token := clientFlags(fs, os.Getenv)
	strs, bools := map[string]*string{}, map[string]*bool{}
	for _, f := range oc.fields {
		if f.bool {
			bools[f.name] = fs.Bool(f.name, false, f.usage)
		} else {
			strs[f.name] = fs.String(f.name, "", f.usage)
		}
	}
	labels := labelFlags{}
	if group == "devices" {
		fs.Var(labelSet{labels}, "label", "KEY=VALUE: set the label KEY (repeatable; the other labels stay)")
		fs.Var(labelUnset{labels}, "unlabel", "KEY: remove the label KEY (repeatable)")
	}
	ifVersion := fs.Int64("if-version", 0, "change it only if it is still at this version (its ETag); 0: whatever its version")
	asJSON := fs.Bool("json", false, "print the updated "+oc.kind+" as JSON")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: herd %s update ID [flags]\n\nChanges the fields given of %s ID (PATCH /v1/%s/ID) and prints its new\nversion. A field not given stays as it is.\n\nFlags:\n", group, oc.kind, group)
		fs.PrintDefaults()
	}
	// The id may come anywhere among the flags ("herd devices update 42
	// --name x" as well as the flag package's order, flags first).
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		} else if fs.NArg() == 0 {
			break
		}
		pos, args = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	if len(pos) > 1 {
		return &usageError{msg: fmt.Sprintf("%s update takes one id, got %q", group, pos)}
	}
	idArg := strings.Join(pos, "")
	id, err := strconv.ParseInt(idArg, 10, 64)
	if err != nil || id <= 0 {
		return &usageError{msg: fmt.Sprintf("%s update needs the id of a %s (a positive integer), got %q", group, oc.kind, idArg)}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	str := func(name string) *string {
		if set[name] {
			return strs[name]
		}
		return nil
	}
	var names []string
	for _, f := range oc.fields {
		if set[f.name] {
			names = append(names, f.name)
		}
	}
	if len(labels) > 0 {
		names = append(names, "labels")
	}
	if len(names) == 0 {
		var all []string
		for _, f := range oc.fields {
			all = append(all, "--"+f.name)
		}
		if group == "devices" {
			all = append(all, "--label", "--unlabel")
		}
		return &usageError{msg: fmt.Sprintf("%s update changes nothing without %s", group, strings.Join(all, " or "))}
	}
	if *token == "" {
		return &usageError{msg: group + " update needs a token: --token or HERD_TOKEN"}
	}
	c := httpapi.NewClient(*api, *token)
	var obj any
	var version int64
	switch group {
	case "devices":
		var d *herd.Device
		u := herd.DeviceUpdate{Name: str("name"), Model: str("model"), IfVersion: *ifVersion}
		if len(labels) > 0 {
			u.Labels = labels
		}
		d, err = c.UpdateDevice(ctx, id, u)
		if err == nil {
			obj, version = d, d.Version
		}
	case "nodes":
		var n *herd.Node
		n, err = c.UpdateNode(ctx, id, herd.NodeUpdate{Name: str("name"), Kind: str("kind"), IfVersion: *ifVersion})
		if err == nil {
			obj, version = n, n.Version
		}
	case "users":
		u := herd.UserUpdate{Name: str("name"), IfVersion: *ifVersion}
		if set["disabled"] {
			u.Disabled = bools["disabled"]
		}
		var usr *herd.User
		usr, err = c.UpdateUser(ctx, id, u)
		if err == nil {
			obj, version = usr, usr.Version
		}
	case "tenants":
		var t *herd.Tenant
		t, err = c.UpdateTenant(ctx, id, herd.TenantUpdate{Name: str("name"), IfVersion: *ifVersion})
		if err == nil {
			obj, version = t, t.Version
		}
	}
	if err != nil {
		return fmt.Errorf("%s update: %w", group, err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(obj)
	}
	_, err = fmt.Fprintf(stdout, "%s %d is at version %d (%s given)\n", oc.kind, id, version, strings.Join(names, ", "))
	return err
}

// labelFlags collect --label and --unlabel into the labels member of a
// device's merge patch: a value sets its key, nil removes it. The key and
// value are checked by the server, as any patch is.
type labelFlags map[string]*string

// labelSet is --label KEY=VALUE.
type labelSet struct{ m labelFlags }

func (l labelSet) String() string { return "" }

func (l labelSet) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("%q is not KEY=VALUE", s)
	}
	l.m[k] = &v
	return nil
}

// labelUnset is --unlabel KEY.
type labelUnset struct{ m labelFlags }

func (l labelUnset) String() string { return "" }

func (l labelUnset) Set(s string) error {
	l.m[s] = nil
	return nil
}
