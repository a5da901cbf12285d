// Command herd is the one binary of the herd IoT fleet platform: the server
// (herd serve) and the tools around it (seed, simulate, bench, version). Wiring of the
// adapters into a running process happens here and nowhere else.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal starts a graceful shutdown, a second one
		// should kill the process at once, as people expect of Ctrl-C.
		<-ctx.Done()
		stop()
	}()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.msg != "" {
				fmt.Fprintf(os.Stderr, "%s\n", ee.msg)
			}
			os.Exit(ee.code)
		}
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(os.Stderr, "herd: %s\n\n", ue.msg)
			printUsage(os.Stderr)
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "herd: %s\n", err)
		os.Exit(1)
	}
}

// run dispatches to a subcommand; each lives in its own file.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return &usageError{msg: "no command given"}
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, args, stderr)
	case "seed":
		return runSeed(ctx, args, stdout, stderr)
	case "bench":
		return runBench(ctx, args, stdout, stderr)
	case "simulate":
		return runSimulate(ctx, args, stdout, stderr)
	case "watch":
		return runWatch(ctx, args, stdout, stderr)
	case "readings":
		return runReadings(ctx, args, stdout, stderr)
	case "aggregate":
		return runAggregate(ctx, args, stdout, stderr)
	case "summary":
		return runSummary(ctx, args, stdout, stderr)
	case "list":
		return runList(ctx, args, stdout, stderr)
	case "export":
		return runExport(ctx, args, stdout, stderr)
	case "doctor":
		return runDoctor(ctx, args, stdout, stderr)
	case "devices", "nodes", "users", "tenants":
		return runObjects(ctx, cmd, args, stdout, stderr)
	case "version", "--version", "-version":
		return runVersion(stdout)
	case "help", "-h", "-help", "--help":
		printUsage(stdout)
		return nil
	}
	return &usageError{msg: fmt.Sprintf("unknown command %q", cmd)}
}

// usageError is a command line that herd cannot make sense of: the message
// is followed by the usage text.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func printUsage(w io.Writer) {
	fmt.Fprint(w, `herd is a multi-tenant IoT fleet platform.

Usage:

	herd <command> [flags]

Commands:

	serve     run the server (REST API) with embedded defaults
	seed      fill a store with a synthetic fleet
	simulate  simulate devices against a running herd over MQTT
	watch     print the events a token may see, live
	readings  print one device's telemetry history, raw or one point per step
	aggregate print a field's aggregates over a scope of devices, per step
	summary   print the latest state of a scope of devices, per group
	list      print a list: tenants, users, tokens, a node's children, grants, nodes by name
	export    write a scope's readings to a Parquet, CSV or NDJSON file
	doctor    check a database: "herd doctor ids" finds id columns near their limit
	devices   "herd devices update ID --name X --model Y" renames a device
	nodes     "herd nodes update ID --name X --kind Y" renames a node
	users     "herd users update ID --name X --disabled=true" renames or disables a user;
	          "herd users password ID < FILE" sets the password they sign in with;
	          "herd users password-link ID" makes a one-time link to set it
	tenants   "herd tenants update ID --name X" renames a tenant (super-admin)
	bench     run the benchmark scenarios
	version   print the version
	help      print this help

Run "herd <command> -h" for the flags of a command.
`)
}
