package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/herd-iot/herd/httpapi"
)

// stdin is what "herd users password" reads the password from (tests
// give it theirs).
var stdin io.Reader = os.Stdin

// runUserPassword is "herd users password ID": it sets the password of
// user ID (POST /v1/users/ID/password) to the first line of standard
// input, so that the password is in neither the shell's history nor the
// process list; the second line is the current password, which a user
// changing their own gives.
func runUserPassword(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	api, token, id, err := userCommand("password", "Usage: herd users password ID [flags] < FILE\n\nSets the password user ID signs in with (at least 10 characters) to the\nfirst line of standard input, and ends their sessions. An admin of the\ntenant's root may; so may the user themself, with the password they\nhave on the second line.", args, stderr)
	if err != nil {
		return err
	}
	in := bufio.NewReader(stdin)
	var lines [2]string
	for i := range lines {
		line, err := in.ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("users password: read standard input: %w", err)
		}
		lines[i] = strings.TrimRight(line, "\r\n")
	}
	pw, current := lines[0], lines[1]
	if pw == "" {
		return errors.New("users password: no password on standard input (give it as its first line)")
	}
	if err := httpapi.NewClient(*api, *token).SetPassword(ctx, id, pw, current); err != nil {
		return fmt.Errorf("users password: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "user %d has a new password; their sessions ended\n", id)
	return err
}

// runUserPasswordLink is "herd users password-link ID": an admin's
// one-time link for user ID to set their password with (POST
// /v1/users/ID/password-link); it prints the link's secret, the only time
// it is shown, and when it ends.
func runUserPasswordLink(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	api, token, id, err := userCommand("password-link", "Usage: herd users password-link ID [flags]\n\nMakes a one-time secret with which user ID sets their password without\nsigning in (POST /v1/password {token, password}), valid for 24 hours;\nit ends the user's earlier links. An admin of the tenant's root may.", args, stderr)
	if err != nil {
		return err
	}
	l, err := httpapi.NewClient(*api, *token).CreatePasswordLink(ctx, id)
	if err != nil {
		return fmt.Errorf("users password-link: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "%s\n(user %d sets a password with it until %s; it is shown only now)\n", l.Secret, id, l.ExpiresAt.Format("2006-01-02 15:04 MST"))
	return err
}

// userCommand parses the flags and the one user id of "herd users NAME
// ID": the client flags, and the id.
func userCommand(name, usage string, args []string, stderr io.Writer) (api, token *string, id int64, err error) {
	fs := flag.NewFlagSet("herd users "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	api, token = clientFlags(fs, os.Getenv)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage+"\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, nil, 0, err
		} else if fs.NArg() == 0 {
			break
		}
		pos, args = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	if len(pos) != 1 {
		return nil, nil, 0, &usageError{msg: fmt.Sprintf("users %s takes one user id, got %q", name, pos)}
	}
	if id, err = strconv.ParseInt(pos[0], 10, 64); err != nil || id <= 0 {
		return nil, nil, 0, &usageError{msg: fmt.Sprintf("users %s: %q is not a user id", name, pos[0])}
	}
	if *token == "" {
		return nil, nil, 0, &usageError{msg: "users " + name + " needs a token: --token or HERD_TOKEN"}
	}
	return api, token, id, nil
}
