package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// On PostgreSQL readings is partitioned by range of ts, one partition per
// UTC day (migration 0018): readings_pYYYYMMDD holds [that day's midnight,
// the next midnight). Besides the days there are readings_legacy, the
// table of before the migration (every ts before the migration's
// tomorrow), and readings_default, PostgreSQL's DEFAULT partition, which
// takes a reading whose day has no partition, so that ingest never fails
// for lack of one.
const (
	// PartitionsAhead is how many days after today get their partition
	// ahead of time. Today's and the next three exist at any moment the
	// manager has run in the last three days, so a reading of now never
	// lands in the default, even when the manager cannot take its lock for
	// a while (an export holding the table, see partitionLockTimeout).
	PartitionsAhead = 3
	// partitionMoveMax is the most rows of a day found in the default that
	// are moved into the day's new partition. More stay in the default
	// (the day then gets no partition; the retention deletes them in
	// chunks): the move holds a lock that stops ingest.
	partitionMoveMax = 10_000
	// partitionLockTimeout bounds how long creating or dropping a
	// partition waits for its lock. Both take an ACCESS EXCLUSIVE lock on
	// readings, and while one waits every insert queues behind it: this is
	// the longest it can hold ingest (a PUBACK) back, after which it gives
	// up until the next run.
	partitionLockTimeout = "500ms"
	// pgDeleteChunk is the rows per statement of the deletes from the
	// legacy and default partitions on PostgreSQL, where a delete takes
	// row locks only and ingest, which inserts new rows, never waits for
	// it.
	pgDeleteChunk = 10_000
)

const partitionDayMS = int64(24 * time.Hour / time.Millisecond)

// partition is one partition of readings and its range [lo, hi) of ts.
type partition struct {
	name   string
	def    bool // the DEFAULT partition: no range
	lo, hi int64
	rows   float64 // the planner's estimate (reltuples), 0 if never analysed
	bytes  int64   // table, indexes and TOAST
}

// partitionName names the partition of the UTC day that starts at dayStart.
func partitionName(dayStart int64) string {
	return "readings_p" + time.UnixMilli(dayStart).UTC().Format("20060102")
}

// partitionDay returns the start of t's UTC day in unix milliseconds.
func partitionDay(t time.Time) int64 {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC).UnixMilli()
}

// EnsurePartitions creates the partitions of readings for today and the
// PartitionsAhead days after it (UTC, by the DB's clock) that do not exist
// yet. It does nothing on SQLite. Several processes may run it at once: an
// advisory lock lets one do the work, and the others skip. herd serve runs
// it before it serves ingest and then hourly with the retention.
func (db *DB) EnsurePartitions(ctx context.Context) (err error) {
	defer wrapOp("sqldb.EnsurePartitions", &err)
	if db.dialect != Postgres {
		return nil
	}
	return db.withPartitionLock(ctx, func(conn *sql.Conn) error {
		return db.ensurePartitions(ctx, conn)
	})
}

// withPartitionLock runs fn on a connection holding the partition
// manager's advisory lock, or returns nil at once if another session holds
// it. The key is of the schema, so that stores side by side in one
// database (tests) do not exclude each other.
func (db *DB) withPartitionLock(ctx context.Context, fn func(*sql.Conn) error) error {
	_, err := db.withAdvisoryLock(ctx, "herd readings partitions", fn)
	return err
}

// withAdvisoryLock runs fn on a connection of its own that holds
// PostgreSQL's advisory lock of name (in the current schema, so that
// tests' schemas do not meet); if another session holds it, fn does not
// run and ran is false.
func (db *DB) withAdvisoryLock(ctx context.Context, name string, fn func(*sql.Conn) error) (ran bool, err error) {
	// The main pool's, not the event pipeline's small one (bdb): a run
	// holds its connection for as long as the old rows take to delete.
	conn, err := db.wdb.Conn(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	const key = `hashtextextended(CAST($1 AS TEXT) || '/' || current_schema(), 0)`
	var got bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock(`+key+`)`, name).Scan(&got); err != nil {
		return false, fmt.Errorf("%s lock: %w", name, err)
	}
	if !got {
		db.Logger.Debug(name + " busy in another session; skipped")
		return false, nil
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(`+key+`)`, name)
	return true, fn(conn)
}

// partitionBound reads the bounds pg_get_expr prints for a range partition
// of a bigint: FOR VALUES FROM ('1') TO ('2'), with MINVALUE or MAXVALUE
// for an open end.
var partitionBound = regexp.MustCompile(`^FOR VALUES FROM \((.+)\) TO \((.+)\)$`)

func parseBound(s string, open int64) (int64, error) {
	switch s {
	case "MINVALUE", "MAXVALUE":
		return open, nil
	}
	return strconv.ParseInt(strings.Trim(s, "'"), 10, 64)
}

// partitions lists the partitions of readings.
func (db *DB) partitions(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}) ([]partition, error) {
	rows, err := q.QueryContext(ctx, `SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), c.reltuples, pg_total_relation_size(c.oid)
		FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'readings'::regclass`)
	if err != nil {
		return nil, fmt.Errorf("list partitions: %w", err)
	}
	defer rows.Close()
	var ps []partition
	for rows.Next() {
		var p partition
		var bound string
		if err := rows.Scan(&p.name, &bound, &p.rows, &p.bytes); err != nil {
			return nil, fmt.Errorf("list partitions: %w", err)
		}
		p.rows = math.Max(p.rows, 0) // -1: never vacuumed or analysed
		if bound == "DEFAULT" {
			p.def = true
		} else if m := partitionBound.FindStringSubmatch(bound); m != nil {
			if p.lo, err = parseBound(m[1], math.MinInt64); err == nil {
				p.hi, err = parseBound(m[2], math.MaxInt64)
			}
			if err != nil {
				return nil, fmt.Errorf("partition %s: bound %q: %w", p.name, bound, err)
			}
		} else {
			return nil, fmt.Errorf("partition %s: bound %q not understood", p.name, bound)
		}
		ps = append(ps, p)
	}
	return ps, rows.Err()
}

// ensurePartitions creates today's partition and PartitionsAhead more on
// conn, which holds the manager's lock. A day that overlaps an existing
// partition (the legacy one covers up to the migration's tomorrow) is
// left alone. A day already partitioned by name is skipped without a lock.
func (db *DB) ensurePartitions(ctx context.Context, conn *sql.Conn) error {
	ps, err := db.partitions(ctx, conn)
	if err != nil {
		return err
	}
	today := partitionDay(db.Now())
	for d := range int64(PartitionsAhead + 1) {
		lo := today + d*partitionDayMS
		hi := lo + partitionDayMS
		overlaps := false
		for _, p := range ps {
			if !p.def && p.lo < hi && lo < p.hi {
				overlaps = true
			}
		}
		if overlaps {
			continue
		}
		if err := db.createPartition(ctx, conn, lo, hi); err != nil {
			return err
		}
	}
	return nil
}

// createPartition creates the partition of [lo, hi) in one transaction,
// moving into it the rows of the range that the default holds. It locks
// readings first (ACCESS EXCLUSIVE, as CREATE TABLE … PARTITION OF would
// anyway), so no insert lands in the default's part of the range between
// the move and the creation; PostgreSQL then checks the default has none
// left, which reads the default, kept small for that reason (migration
// 0018).
func (db *DB) createPartition(ctx context.Context, conn *sql.Conn, lo, hi int64) error {
	name := partitionName(lo)
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create partition %s: %w", name, err)
	}
	defer tx.Rollback()
	var n int64
	err = func() error {
		if _, err := tx.ExecContext(ctx, `SET LOCAL lock_timeout = '`+partitionLockTimeout+`'`); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `LOCK TABLE ONLY readings IN ACCESS EXCLUSIVE MODE`); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM readings_default WHERE ts >= $1 AND ts < $2 LIMIT $3) m`, lo, hi, partitionMoveMax+1).Scan(&n); err != nil {
			return err
		}
		if n > partitionMoveMax {
			return nil
		}
		if n > 0 {
			// A utility statement takes no parameters; lo and hi are numbers.
			if _, err := tx.ExecContext(ctx, fmt.Sprintf(`CREATE TEMP TABLE readings_moving ON COMMIT DROP AS SELECT * FROM readings_default WHERE ts >= %d AND ts < %d`, lo, hi)); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM readings_default WHERE ts >= $1 AND ts < $2`, lo, hi); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(`CREATE TABLE %s PARTITION OF readings FOR VALUES FROM (%d) TO (%d)`, quotePartition(name), lo, hi)); err != nil {
			return err
		}
		if n > 0 {
			if _, err := tx.ExecContext(ctx, `INSERT INTO readings SELECT * FROM readings_moving`); err != nil {
				return err
			}
		}
		return tx.Commit()
	}()
	if err != nil {
		if isPartitionLockTimeout(err) {
			db.Logger.Warn("partition not created: readings is busy; the next run tries again", "partition", name)
			return nil
		}
		return fmt.Errorf("create partition %s: %w", name, err)
	}
	if n > partitionMoveMax {
		db.Logger.Warn("partition not created: the default partition holds too many of its rows; they stay there until the retention deletes them",
			"partition", name, "rows_over", partitionMoveMax)
		return nil
	}
	db.Logger.Info("partition created", "partition", name, "rows_moved", n)
	return nil
}

// prunePartitions drops the partitions whose whole range is before cut and
// deletes the rows before cut from those with an open start (the legacy
// partition and the default), in chunks. A day partition that straddles
// cut keeps its older rows until it is dropped whole, the next day: on
// PostgreSQL readings stay up to a day past the retention.
func (db *DB) prunePartitions(ctx context.Context, conn *sql.Conn, cut int64) (dropped, deleted int64, err error) {
	ps, err := db.partitions(ctx, conn)
	if err != nil {
		return 0, 0, err
	}
	for _, p := range ps {
		switch {
		case !p.def && p.hi <= cut:
			ok, err := db.dropPartition(ctx, conn, p.name)
			if err != nil {
				return dropped, deleted, err
			}
			if ok {
				dropped++
			}
		case p.def || p.lo == math.MinInt64:
			n, err := db.deleteChunksPG(ctx, conn, p.name, cut)
			deleted += n
			if err != nil {
				return dropped, deleted, err
			}
		}
	}
	return dropped, deleted, nil
}

// dropPartition drops one partition past the retention; false if its lock
// could not be had in time (the next run tries again).
func (db *DB) dropPartition(ctx context.Context, conn *sql.Conn, name string) (bool, error) {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SET LOCAL lock_timeout = '`+partitionLockTimeout+`'`); err != nil {
		return false, err
	}
	if _, err := tx.ExecContext(ctx, `DROP TABLE `+quotePartition(name)); err != nil {
		if isPartitionLockTimeout(err) {
			db.Logger.Warn("partition not dropped: readings is busy; the next run tries again", "partition", name)
			return false, nil
		}
		return false, fmt.Errorf("drop partition %s: %w", name, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("drop partition %s: %w", name, err)
	}
	db.Logger.Info("partition dropped", "partition", name)
	return true, nil
}

// pgDeleteBudget bounds the chunked deletes of one retention run. The run
// holds the partition lock, and while it does no process creates the days
// ahead; a legacy table of billions of rows is emptied over several runs
// instead of one that outlasts the days created ahead.
const pgDeleteBudget = 10 * time.Minute

// deleteChunksPG deletes the rows before cut from one partition, a chunk
// per transaction, by the partition's key (ts leads it), for at most
// pgDeleteBudget; the next run goes on.
func (db *DB) deleteChunksPG(ctx context.Context, conn *sql.Conn, name string, cut int64) (int64, error) {
	q := fmt.Sprintf(`DELETE FROM %[1]s WHERE (ts, device_id) IN (SELECT ts, device_id FROM %[1]s WHERE ts < $1 ORDER BY ts LIMIT $2)`, quotePartition(name))
	var total int64
	start := time.Now()
	for time.Since(start) < pgDeleteBudget {
		res, err := conn.ExecContext(ctx, q, cut, pgDeleteChunk)
		if err != nil {
			return total, fmt.Errorf("delete from %s: %w", name, err)
		}
		n, _ := res.RowsAffected()
		total += n
		if n < pgDeleteChunk {
			return total, nil
		}
	}
	db.Logger.Info("retention: deleting old readings goes on at the next run", "partition", name, "deleted", total)
	return total, nil
}

func quotePartition(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// isPartitionLockTimeout reports PostgreSQL's lock_not_available (lock_timeout).
func isPartitionLockTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55P03"
}
