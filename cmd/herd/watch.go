package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
)

// runWatch runs `herd watch`: a live feed of the events a token may see,
// one line each, through httpapi.Watcher (hints from the stream, events
// from the log, no gap and no repeat across reconnects).
func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herd watch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	api, token := clientFlags(fs, os.Getenv)
	tenant := fs.Int64("tenant", 0, "tenant to watch: needed with a super-admin token only")
	after := fs.Int64("after", -1, "print the events after this seq first (default: from now on)")
	var types multiFlag
	fs.Var(&types, "type", `only events of this type or pattern ("device.online", "device.*"); repeat for more`)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: herd watch [flags]\n\nPrints the events the token may see as they are committed: seq, type,\nsubject and path, then the payload. Stops with Ctrl-C.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{msg: fmt.Sprintf("watch takes no arguments, got %q", fs.Args())}
	}
	if *token == "" {
		return &usageError{msg: "watch needs a token: --token or HERD_TOKEN"}
	}
	if len(types) == 0 {
		types = []string{"*"}
	}
	for _, t := range types {
		if !herd.ValidEventPattern(t) {
			return &usageError{msg: fmt.Sprintf(`--type %q is not an event type, a pattern such as "device.*", or "*"`, t)}
		}
	}
	c := httpapi.NewClient(*api, *token)
	w := &httpapi.Watcher{Client: c, TenantID: *tenant, After: *after}
	w.OnResync = func(ctx context.Context) (int64, error) {
		fmt.Fprintln(stderr, "herd watch: events were lost past the retention; going on from the head")
		page, err := c.FindEvents(ctx, *tenant, -1, 1)
		if err != nil {
			return 0, err
		}
		return page.Head, nil
	}
	w.Handle = func(_ context.Context, ev *herd.Event) error {
		if !herd.MatchEventType(types, ev.Type) {
			return nil
		}
		_, err := fmt.Fprintf(stdout, "%d %s %s/%d %s %s\n", ev.Seq, ev.Type, ev.SubjectType, ev.SubjectID, ev.Path, ev.Payload)
		return err
	}
	fmt.Fprintf(stderr, "herd watch: following %s after seq %d\n", *api, w.After)
	err := w.Run(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	// The watcher gives up only on what no retry can change, such as a
	// super-admin's token without --tenant: say what herd answered.
	var he *herd.Error
	if errors.As(err, &he) {
		hint := ""
		if he.Code == herd.EINVALID && *tenant == 0 {
			hint = " (a super-admin's token names the tenant to watch: --tenant ID)"
		}
		return fmt.Errorf("watch %s: herd answered %s: %s%s", *api, he.Code, he.Message, hint)
	}
	return fmt.Errorf("watch %s: %w", *api, err)
}
