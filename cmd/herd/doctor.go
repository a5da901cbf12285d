package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/herd-iot/herd/idguard"
)

// exitError ends the process with a code of its own (after printing msg,
// when there is one): the doctor's 1 (warn), 2 (critical) and 3 (could not
// read) are for cron and CI.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// Doctor exit codes.
const (
	doctorOK       = 0
	doctorWarn     = 1
	doctorCritical = 2
	doctorFailed   = 3
)

// runDoctor runs `herd doctor ids`.
func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "ids" {
		return &exitError{doctorFailed, "doctor needs a subject: herd doctor ids --dsn DSN"}
	}
	return runDoctorIDs(ctx, args[1:], stdout, stderr)
}

// doctorFailure is exit 3 with a message naming the command.
func doctorFailure(cmd string, err error) error {
	return &exitError{doctorFailed, cmd + ": " + err.Error()}
}

// parseDoctorFlags parses a doctor command's flags: help is help, any
// other mistake exit 3 (2 means "critical" to the doctor's callers).
func parseDoctorFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return &exitError{doctorFailed, err.Error()}
	}
	return nil
}

// openDoctorDB opens and reaches the database of a DSN, or fails with exit 3.
func openDoctorDB(ctx context.Context, cmd, dsn string) (*sql.DB, idguard.Dialect, error) {
	dsn, err := doctorDSN(dsn)
	if err != nil {
		return nil, "", doctorFailure(cmd, err)
	}
	db, d, err := idguard.Open(dsn)
	if err != nil {
		return nil, "", doctorFailure(cmd, err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, "", doctorFailure(cmd, fmt.Errorf("cannot reach the %s database: %w", d, err))
	}
	return db, d, nil
}

// doctorDSN turns a directory into the SQLite store herd keeps there
// (herd.db in the data dir, as `herd serve --data-dir` makes it), and says
// so plainly when there is none: SQLite would fail on a directory with
// words that do not say what to give instead.
//
// A URL's scheme is read in any case, as URLs allow, and mariadb:// is
// MySQL's: idguard knows the lower-case names only, and took anything else
// for a SQLite file ("cannot reach the sqlite database" for Postgres://).
func doctorDSN(dsn string) (string, error) {
	if m := schemeRE.FindStringSubmatch(dsn); m != nil {
		switch scheme, rest := strings.ToLower(m[1]), dsn[len(m[0]):]; scheme {
		case "postgres", "postgresql", "mysql":
			return scheme + ":" + rest, nil
		case "mariadb":
			return "mysql:" + rest, nil
		case "sqlite", "file":
		default:
			return "", fmt.Errorf("unknown scheme %q: want mysql://, mariadb://, postgres://, postgresql://, a SQLite file or a herd data dir", m[1])
		}
	}
	if strings.Contains(dsn, "://") {
		return dsn, nil
	}
	path := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "file:")
	st, err := os.Stat(path)
	if err != nil || !st.IsDir() {
		return dsn, nil
	}
	store := filepath.Join(path, "herd.db")
	if _, err := os.Stat(store); err != nil {
		return "", fmt.Errorf("%s is a directory without herd.db in it: give the SQLite file itself (or a herd data dir)", path)
	}
	return store, nil
}

// isTerminal reports whether w is a terminal: progress lines are drawn
// only there, and never end up in a cron mail or a CI log.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// percentFlag reads 70, 70% or 0.7 as a share.
type percentFlag struct{ v *float64 }

func (p percentFlag) String() string {
	if p.v == nil {
		return ""
	}
	return strconv.FormatFloat(*p.v*100, 'f', -1, 64) + "%"
}

func (p percentFlag) Set(s string) error {
	s = strings.TrimSpace(s)
	pct := strings.HasSuffix(s, "%")
	f, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil || f < 0 {
		return fmt.Errorf("%q is not a percentage", s)
	}
	// "70%" and "70" are percentages; "0.7" is a share.
	if pct || f > 1 {
		f /= 100
	}
	if f > 1 {
		return fmt.Errorf("%q is over 100%%", s)
	}
	*p.v = f
	return nil
}

func runDoctorIDs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "widen" {
		return runDoctorWiden(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("herd doctor ids", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dsn := fs.String("dsn", "", "database: mysql:// or mariadb://user:pass@host:3306/db (MySQL, MariaDB), postgres://… (PostgreSQL; its search_path's schema), a SQLite file, or a herd data dir; the scheme in any case")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	warn, crit := 0.70, 0.85
	fs.Var(percentFlag{&warn}, "warn", "share of an id range from which to warn (exit 1)")
	fs.Var(percentFlag{&crit}, "crit", "share of an id range from which it is critical (exit 2)")
	sample := fs.Duration("sample", 0, "read twice, this far apart, to estimate ids a day and days left (for example 60s)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: herd doctor ids --dsn DSN [flags]

Finds every auto-increment, serial, identity and sequence-backed id column
and how much of its range is used. Exit code: 0 below --warn, 1 at or above
it, 2 at or above --crit, 3 when the database could not be read, or only
part of it (a MySQL user who sees some tables only, a PostgreSQL
search_path whose schema is missing or not usable, a sequence it may not
read). A herd data dir is read by its herd.db.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseDoctorFlags(fs, args); err != nil {
		return err
	}
	if *dsn == "" {
		return doctorFailure("herd doctor ids", errors.New("--dsn is required (mysql://…, postgres://… or a SQLite file)"))
	}
	if warn > crit {
		return doctorFailure("herd doctor ids", fmt.Errorf("--warn %.0f%% is above --crit %.0f%%", warn*100, crit*100))
	}
	ctx, cancel := context.WithTimeout(ctx, max(2*time.Minute, 2**sample+time.Minute))
	defer cancel()
	db, d, err := openDoctorDB(ctx, "herd doctor ids", *dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	// Progress is drawn over itself on a terminal, at most once a second,
	// and not at all elsewhere: off a terminal the table is the summary.
	var progress func(done, total int)
	if isTerminal(stderr) {
		var last time.Time
		progress = func(done, total int) {
			if time.Since(last) < time.Second && done != total {
				return
			}
			last = time.Now()
			fmt.Fprintf(stderr, "\rscanned %d of %d id columns\x1b[K", done, total)
			if done == total {
				fmt.Fprint(stderr, "\r\x1b[K")
			}
		}
	}
	var cols []idguard.Column
	if *sample > 0 {
		if progress != nil {
			fmt.Fprintf(stderr, "sampling twice, %s apart\n", *sample)
		}
		cols, err = idguard.Sample(ctx, db, d, *sample, progress)
	} else {
		cols, err = idguard.Scan(ctx, db, d, progress)
	}
	if err != nil {
		return doctorFailure("herd doctor ids", fmt.Errorf("cannot read the id columns: %w", err))
	}
	// level is a column's exit code; the command's is the worst of them.
	level := func(c idguard.Column) int {
		switch {
		case c.Ratio >= crit:
			return doctorCritical
		case c.Ratio >= warn:
			return doctorWarn
		}
		return doctorOK
	}
	code := doctorOK
	for _, c := range cols {
		code = max(code, level(c))
	}
	if *asJSON {
		if cols == nil {
			cols = []idguard.Column{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(map[string]any{"dialect": d, "columns": cols, "warn": warn, "crit": crit, "exit": code})
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "TABLE\tCOLUMN\tTYPE\tUSED\tMAX\tUSED %\tPER DAY\tDAYS LEFT\tSTATUS\t")
		for _, c := range cols {
			status := [...]string{doctorOK: "ok", doctorWarn: "WARN", doctorCritical: "CRITICAL"}[level(c)]
			perDay, days := "–", "–"
			if c.PerDay > 0 {
				perDay, days = strconv.FormatFloat(c.PerDay, 'f', 0, 64), strconv.FormatFloat(c.DaysLeft, 'f', 1, 64)
			}
			typ := c.Type
			if c.Sequence != "" {
				typ += " (seq " + c.Sequence + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.1f%%\t%s\t%s\t%s\t\n", c.Table, c.Column, typ, idguard.FormatCount(c.Used), idguard.FormatCount(c.Max), c.Ratio*100, perDay, days, status)
		}
		tw.Flush()
		if len(cols) == 0 {
			fmt.Fprintln(stdout, "no auto-increment, serial, identity or sequence-backed columns")
		}
	}
	if code != doctorOK {
		return &exitError{code: code}
	}
	return nil
}

// runDoctorWiden runs `herd doctor ids widen`: the plan by default, the
// widening with --execute.
func runDoctorWiden(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herd doctor ids widen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dsn := fs.String("dsn", "", "database: mysql://… (MySQL, MariaDB) or postgres://…")
	table := fs.String("table", "", "table whose id column to widen to BIGINT")
	column := fs.String("column", "", "the column (default: the table's auto-increment or sequence-backed one)")
	execute := fs.Bool("execute", false, "run the plan (without it, only print it)")
	maxAlter := fs.Int64("max-alter-rows", idguard.DefaultMaxAlterRows, "tables with fewer rows are ALTERed in place; larger ones are swapped and copied back")
	rate := fs.Float64("rows-per-second", 0, "most rows a second the copy of a large table moves (0: as fast as it can)")
	chunk := fs.Int("chunk", 1000, "rows per copy step (each step commits and checkpoints)")
	lockTimeout := fs.Duration("lock-timeout", idguard.DefaultLockTimeout, "longest an ALTER, RENAME TABLE or LOCK TABLE waits for its lock behind open transactions per try (writers wait behind it)")
	lockTries := fs.Int("lock-tries", idguard.DefaultLockTries, "tries of each lock, with a growing pause between them, before giving up")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: herd doctor ids widen --dsn DSN --table T [--column C] [--execute]

Widens an id column to BIGINT. Prints the plan unless --execute is given.
A small table is ALTERed in place, with the foreign-key columns that
reference it. A large one is swapped for an empty BIGINT table whose ids
start past the old type's largest value (one atomic rename: writes resume at
once), and its rows are copied back in primary-key chunks, throttled and
checkpointed: run the same command again to resume a copy that was stopped.
The counts are verified at the end. Exit 3 on any failure.

Each lock on the table (the ALTER's, the swap's RENAME TABLE or LOCK TABLE)
waits at most --lock-timeout behind transactions that have the table open,
since writers queue behind it, and is tried --lock-tries times before the
widening gives up. A swap stopped before its rename is undone by the next
--execute.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseDoctorFlags(fs, args); err != nil {
		return err
	}
	fail := func(err error) error { return doctorFailure("herd doctor ids widen", err) }
	if *dsn == "" || *table == "" {
		return fail(errors.New("--dsn and --table are required"))
	}
	db, d, err := openDoctorDB(ctx, "herd doctor ids widen", *dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	// A swap stopped before its rename (killed, or its connection lost)
	// left its checkpoint and an empty new table: nothing was swapped, so
	// there is no copy to resume. --execute takes them back and plans
	// afresh; a plan only says so.
	stopped, err := idguard.InterruptedSwap(ctx, db, d, *table)
	if err != nil {
		return fail(err)
	}
	if stopped && !*execute {
		fmt.Fprintf(stdout, "an earlier swap of %s stopped before its rename: nothing was swapped; --execute first drops its empty %s_new and its checkpoint, then plans and swaps again\n", *table, *table)
		return nil
	}
	if stopped {
		if _, err := idguard.UndoInterruptedSwap(ctx, db, d, *table); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "an earlier swap of %s stopped before its rename: undone (its empty %s_new and its checkpoint dropped)\n", *table, *table)
	}
	p, resumed, err := planOrResume(ctx, db, d, *table, *column, *maxAlter)
	if err != nil {
		return fail(err)
	}
	p.LockTimeout, p.LockTries = *lockTimeout, *lockTries
	if !resumed {
		fmt.Fprint(stdout, p.String())
	} else {
		fmt.Fprintf(stdout, "resuming the copy of %s into %s\n", p.Old, p.Table)
	}
	if !*execute {
		if !resumed {
			fmt.Fprintln(stdout, "(a plan only: run again with --execute to carry it out)")
		}
		return nil
	}
	if !resumed {
		if err := idguard.Execute(ctx, db, p); err != nil {
			return fail(err)
		}
		if !p.Swap {
			fmt.Fprintf(stdout, "widened %s.%s to BIGINT\n", p.Table, p.Column)
			return nil
		}
		fmt.Fprintf(stdout, "swapped: %s is BIGINT and takes writes; copying %s back\n", p.Table, p.Old)
	}
	var bar idguard.CopyProgress
	if isTerminal(stderr) {
		bar = copyBar(stderr)
	}
	err = idguard.Copy(ctx, db, p, *chunk, *rate, bar)
	if bar != nil {
		fmt.Fprintln(stderr) // the bar's line ends
	}
	if err != nil {
		return fail(fmt.Errorf("copy stopped (run the same command again to resume): %w", err))
	}
	old, found, err := idguard.Verify(ctx, db, p)
	if err != nil {
		return fail(err)
	}
	if old != found {
		return fail(fmt.Errorf("verify: %s holds %d rows, %d of them found in %s", p.Old, old, found, p.Table))
	}
	if err := idguard.Done(ctx, db, p); err != nil {
		return fail(err)
	}
	fmt.Fprintf(stdout, "copied and verified: all %d rows of %s are in %s; drop %s when you no longer need it\n", old, p.Old, p.Table, p.Old)
	return nil
}

// planOrResume plans the widening, or finds a swap of the table whose
// copy has not been verified (its checkpoint says so) to go on with.
func planOrResume(ctx context.Context, db *sql.DB, d idguard.Dialect, table, column string, maxAlter int64) (*idguard.WidenPlan, bool, error) {
	pending, err := idguard.PendingCopy(ctx, db, d, table)
	if err != nil {
		return nil, false, err
	}
	if pending != nil {
		return pending, true, nil
	}
	p, err := idguard.PlanWiden(ctx, db, d, table, column, maxAlter)
	return p, false, err
}

// copyBar draws the copy's progress over itself on a terminal, at most
// once a second.
func copyBar(w io.Writer) idguard.CopyProgress {
	start, last := time.Now(), time.Time{}
	return func(copied, total int64) {
		if time.Since(last) < time.Second && copied < total {
			return
		}
		last = time.Now()
		eta := "–"
		if copied > 0 && total > copied {
			eta = (time.Duration(float64(time.Since(start)) / float64(copied) * float64(total-copied))).Round(time.Second).String()
		}
		width := 30
		done := 0
		if total > 0 {
			done = int(float64(width) * float64(copied) / float64(total))
		}
		fmt.Fprintf(w, "\r[%s%s] %d of %d rows, ETA %s\x1b[K", strings.Repeat("#", min(done, width)), strings.Repeat(".", width-min(done, width)), copied, total, eta)
	}
}
