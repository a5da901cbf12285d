package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
)

// listKinds are what herd list lists, with the flags each needs.
var listKinds = []string{"tenants", "users", "tokens", "children", "grants", "nodes", "devices"}

// runList is herd list KIND: one of the keyset-paged lists of the API, a
// page at a time (--cursor continues) or every page (--all).
func runList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			printListUsage(stdout, nil)
			return nil
		}
		return &usageError{msg: "list needs what to list: " + strings.Join(listKinds, ", ")}
	}
	kind, args := args[0], args[1:]
	fs := flag.NewFlagSet("herd list "+kind, flag.ContinueOnError)
	fs.SetOutput(stderr)
	api, token := clientFlags(fs, os.Getenv)
	tenant := fs.Int64("tenant", 0, "tenant (users, nodes): needed with a super-admin token only")
	node := fs.Int64("node", 0, "node: whose children or grants (children, grants, required), whose grant holders (users), or whose subtree's devices (devices)")
	user := fs.Int64("user", 0, "user whose tokens (tokens, required)")
	q := fs.String("q", "", fmt.Sprintf("text the node names hold (nodes, required); words each device holds in its name, key, model, firmware, a label or a node's name (devices); case-insensitive, at least %d characters", herd.MinNodeSearchLen))
	var filters multiFlag
	fs.Var(&filters, "filter", `devices matching FIELD:OP:VALUE, as GET /v1/devices takes it ("label.ring:eq:canary", "name:contains:pump"); repeat for more (devices)`)
	sortBy := fs.String("sort", "", "FIELD or -FIELD (devices; default id)")
	limit := fs.Int("limit", herd.DefaultListLimit, fmt.Sprintf("items per page, 1 to %d", herd.MaxListLimit))
	cursor := fs.String("cursor", "", "continue after the page that printed this cursor")
	all := fs.Bool("all", false, "print every page, not the first only")
	asJSON := fs.Bool("json", false, "print each page as JSON, one per line")
	fs.Usage = func() { printListUsage(fs.Output(), fs) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{msg: fmt.Sprintf("list %s takes no arguments, got %q", kind, fs.Args())}
	} else if *token == "" {
		return &usageError{msg: "list needs a token: --token or HERD_TOKEN"}
	} else if *limit < 1 || *limit > herd.MaxListLimit {
		return &usageError{msg: fmt.Sprintf("--limit %d must be from 1 to %d", *limit, herd.MaxListLimit)}
	}
	need := func(v int64, name string) error {
		if v == 0 {
			return &usageError{msg: fmt.Sprintf("list %s needs --%s", kind, name)}
		}
		return nil
	}
	c := httpapi.NewClient(*api, *token)
	// page reads one page and prints it; it returns the next cursor.
	var page func(p herd.ListParams) (string, error)
	switch kind {
	case "tenants":
		page = func(p herd.ListParams) (string, error) {
			pg, err := c.FindTenants(ctx, p)
			return printPage(stdout, *asJSON, pg, err, "ID\tNAME\tROOT NODE\tCREATED", func(t *herd.Tenant) string {
				return fmt.Sprintf("%d\t%s\t%d\t%s", t.ID, t.Name, t.RootNodeID, t.CreatedAt.Format(time.RFC3339))
			})
		}
	case "users":
		page = func(p herd.ListParams) (string, error) {
			pg, err := c.FindUsers(ctx, herd.UserListQuery{TenantID: *tenant, NodeID: *node, ListParams: p})
			return printPage(stdout, *asJSON, pg, err, "ID\tNAME\tCREATED", func(u *herd.User) string {
				return fmt.Sprintf("%d\t%s\t%s", u.ID, u.Name, u.CreatedAt.Format(time.RFC3339))
			})
		}
	case "tokens":
		if err := need(*user, "user"); err != nil {
			return err
		}
		page = func(p herd.ListParams) (string, error) {
			pg, err := c.FindTokens(ctx, *user, p)
			return printPage(stdout, *asJSON, pg, err, "ID\tUSER\tCREATED", func(t *herd.Token) string {
				return fmt.Sprintf("%d\t%d\t%s", t.ID, t.UserID, t.CreatedAt.Format(time.RFC3339))
			})
		}
	case "children":
		if err := need(*node, "node"); err != nil {
			return err
		}
		first := true
		page = func(p herd.ListParams) (string, error) {
			pg, err := c.FindChildren(ctx, *node, p)
			if err == nil && first && !*asJSON {
				// The breadcrumb once, above the first page.
				first = false
				var crumbs []string
				for _, a := range pg.Node.Ancestors {
					crumbs = append(crumbs, a.Name)
				}
				fmt.Fprintln(stdout, strings.Join(append(crumbs, pg.Node.Name), " / "))
			}
			var items *herd.ListPage[*herd.NodeChild]
			if pg != nil {
				if *asJSON {
					return pg.NextCursor, writeJSONLine(stdout, pg)
				}
				items = &herd.ListPage[*herd.NodeChild]{Items: pg.Items, NextCursor: pg.NextCursor}
			}
			return printPage(stdout, false, items, err, "ID\tNAME\tKIND\tDEVICES\tONLINE\tALARM\tCHILDREN", func(n *herd.NodeChild) string {
				return fmt.Sprintf("%d\t%s\t%s\t%d\t%d\t%d\t%d", n.ID, n.Name, n.Kind, n.DeviceCount, n.OnlineCount, n.AlarmCount, n.ChildCount)
			})
		}
	case "grants":
		if err := need(*node, "node"); err != nil {
			return err
		}
		page = func(p herd.ListParams) (string, error) {
			pg, err := c.FindGrantsByNode(ctx, *node, p)
			return printPage(stdout, *asJSON, pg, err, "ID\tUSER\tNODE\tROLE\tPATH", func(g *herd.Grant) string {
				return fmt.Sprintf("%d\t%d\t%d\t%s\t%s", g.ID, g.UserID, g.NodeID, g.Role, g.Path)
			})
		}
	case "nodes":
		text, err := herd.CheckNodeSearch(*q)
		if err != nil {
			return &usageError{msg: flagMessage(herd.ErrorMessage(err))}
		}
		page = func(p herd.ListParams) (string, error) {
			pg, err := c.SearchNodes(ctx, herd.NodeSearch{TenantID: *tenant, Q: text, ListParams: p})
			return printPage(stdout, *asJSON, pg, err, "ID\tNAME\tKIND\tPATH", func(n *herd.Node) string {
				return fmt.Sprintf("%d\t%s\t%s\t%s", n.ID, n.Name, n.Kind, n.Path)
			})
		}
	case "devices":
		var err error
		if page, err = devicePager(ctx, c, stdout, *asJSON, *tenant, *node, *q, filters, *sortBy); err != nil {
			return err
		}
	default:
		return &usageError{msg: fmt.Sprintf("list: unknown list %q (%s)", kind, strings.Join(listKinds, ", "))}
	}
	p := herd.ListParams{Limit: *limit, Cursor: *cursor}
	for {
		next, err := page(p)
		if err != nil {
			return fmt.Errorf("list %s: %w", kind, err)
		}
		if next == "" {
			return nil
		} else if !*all {
			if !*asJSON {
				fmt.Fprintf(stdout, "more: --cursor %s (or --all)\n", next)
			}
			return nil
		}
		p.Cursor = next
	}
}

// printPage prints a page as a table (or as one line of JSON) and returns
// its next cursor.
func printPage[T any](w io.Writer, asJSON bool, pg *herd.ListPage[T], err error, head string, row func(T) string) (string, error) {
	if err != nil {
		return "", err
	}
	if asJSON {
		return pg.NextCursor, writeJSONLine(w, pg)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, head)
	for _, item := range pg.Items {
		fmt.Fprintln(tw, row(item))
	}
	return pg.NextCursor, tw.Flush()
}

func writeJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

func printListUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, `Usage: herd list KIND [flags]

Prints one of the API's lists, a page at a time:

	tenants                          every tenant (super-admin)
	users    [--tenant N] [--node N] the users you may see; with --node, those granted on it or under it
	tokens   --user N                a user's tokens, without secrets
	children --node N                a node's children with their device, online and alarm counts
	grants   --node N                the grants on a node and its ancestors: who may see it
	nodes    --q TEXT [--tenant N]   the nodes within your grants whose name holds TEXT
	devices  [--node N] [--q TEXT] [--filter F]... [--sort F] [--tenant N]
	                                 the devices within your grants, as GET /v1/devices

Flags:
`)
	if fs == nil {
		fmt.Fprintln(w, `	(run "herd list KIND -h" for them)`)
		return
	}
	fs.SetOutput(w)
	fs.PrintDefaults()
}
