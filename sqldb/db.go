// Package sqldb implements herd's services on SQLite (modernc.org/sqlite, WAL)
// and PostgreSQL (pgx), from one body of SQL with a small dialect. Migrations
// are embedded per dialect and applied by Open. Every exported method opens
// its own transaction; unexported helpers take the *Tx so they compose, and
// every state change writes its outbox event in the same transaction.
package sqldb

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/idguard"
	"github.com/herd-iot/herd/password"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

//go:embed migrations
var migrationFS embed.FS

// Dialect names the SQL engine behind a DB.
type Dialect string

// Dialects.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DB is a herd store. Create it with NewDB, set its fields, then Open it.
type DB struct {
	// DSN is a postgres:// or postgresql:// URL, or a SQLite file path
	// (optionally prefixed with sqlite: or file:).
	DSN string
	// Now is the clock; tests fix it.
	Now func() time.Time
	// Logger receives structured logs.
	Logger *slog.Logger
	// QueryHook, when set, sees every statement and its arguments before it
	// runs. Tests use it to prove what reaches the database. It may be called
	// from several goroutines at once (a first page counts beside the page).
	QueryHook func(query string, args []any)
	// BulkRebuildRows is the bulk load size from which indexes are rebuilt
	// rather than maintained row by row.
	BulkRebuildRows int64
	// StateCache configures the in-memory state cache of the scoped query.
	StateCache StateCacheConfig
	// ReadingsRetention is how long the history keeps readings and minute
	// rollups (PruneReadings is given the same): a fleet aggregate that
	// would need minute rollups older than that is refused rather than
	// answered with what is left. Zero: DefaultReadingsRetention.
	ReadingsRetention time.Duration
	// NoRollups stops ingest keeping the rollups (rollup.go), for the
	// benchmark of their cost; fleet aggregates then miss what is committed
	// meanwhile.
	NoRollups bool
	// rollupCompactBytes overrides rollupCompactBytes (rollup.go), so a
	// test compacts rows after a few small batches.
	rollupCompactBytes int
	// searchIndexFrom overrides the scope size from which a search asks
	// its trigram index (see SetSearchIndexFrom).
	searchIndexFrom int
	// passwordParams overrides password.Default (SetPasswordParams);
	// dummy is the hash a sign-in of an unknown name checks (dummyHash).
	passwordParams *password.Params
	dummy          struct {
		once sync.Once
		hash string
		err  error
	}

	caches  stateCaches
	bg      background // the DB's own goroutines, waited for in Close
	stmts   stmtCache
	waiters eventWaiters
	dialect Dialect
	metrics *metrics
	// rdb serves reads. On SQLite wdb is a separate single-connection pool
	// with BEGIN IMMEDIATE, because SQLite has one writer and a write that
	// starts as a read would fail with SQLITE_BUSY on upgrade; on PostgreSQL
	// both are the same pool.
	rdb *sql.DB
	wdb *sql.DB
	// bdb serves the event pipeline's background work (relay, consumers,
	// webhook dispatch). On PostgreSQL it is a small pool of its own, a
	// bulkhead: API requests queued on the main pool (waiting for a
	// tenant's lock, say) must not hold events back. On SQLite it is wdb.
	bdb *sql.DB
	// cursorKey signs the cursors the store issues (cursorkey.go).
	cursorKey herd.CursorKey
	// refreshMu makes this process's refreshes of the per-device rollups
	// one at a time (device_rollup_refresh.go); staleFrom, under it, is the
	// last stale mark the previous step computed.
	refreshMu sync.Mutex
	staleFrom staleBucket
}

// NewDB returns a DB for dsn with default settings.
func NewDB(dsn string) *DB {
	return &DB{
		DSN:    dsn,
		Now:    func() time.Time { return time.Now().UTC() },
		Logger: slog.New(slog.DiscardHandler),

		BulkRebuildRows: DefaultBulkRebuildRows,
		StateCache:      DefaultStateCache,
		metrics:         newMetrics(),
	}
}

// Dialect reports which engine the DB runs on.
func (db *DB) Dialect() Dialect { return db.dialect }

// IsPostgresDSN reports whether dsn names a PostgreSQL database.
func IsPostgresDSN(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Open connects, tunes the engine and applies pending migrations.
func (db *DB) Open() (err error) {
	defer wrapOp("sqldb.Open", &err)
	if db.DSN == "" {
		return fmt.Errorf("dsn required")
	}
	if IsPostgresDSN(db.DSN) {
		db.dialect = Postgres
		if db.rdb, err = sql.Open("pgx", db.DSN); err != nil {
			return fmt.Errorf("open postgres: %w", err)
		}
		db.rdb.SetMaxOpenConns(16)
		db.rdb.SetMaxIdleConns(16)
		db.rdb.SetConnMaxIdleTime(5 * time.Minute)
		db.wdb = db.rdb
		if db.bdb, err = sql.Open("pgx", db.DSN); err != nil {
			return fmt.Errorf("open postgres: %w", err)
		}
		db.bdb.SetMaxOpenConns(4)
		db.bdb.SetMaxIdleConns(4)
		db.bdb.SetConnMaxIdleTime(5 * time.Minute)
	} else {
		db.dialect = SQLite
		path := strings.TrimPrefix(strings.TrimPrefix(db.DSN, "sqlite:"), "file:")
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
		if dir := filepath.Dir(path); dir != "" {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("create data dir: %w", err)
			}
		}
		// synchronous=FULL syncs the WAL at every commit: a device told by
		// its PUBACK that a reading is stored keeps it through a power cut,
		// not only a crash (NORMAL would lose the last commits then). Group
		// commit pays that sync once per batch of readings. The memory map lets every
		// connection read pages straight from the OS cache, shared, instead
		// of copying them into its own 64 MiB page cache: index walks that
		// fetch thousands of rows run 10-15% faster.
		pragmas := url.Values{}
		for _, p := range []string{"journal_mode(WAL)", "busy_timeout(10000)", "foreign_keys(1)", "synchronous(FULL)", "cache_size(-65536)", "temp_store(MEMORY)", "mmap_size(4294967296)"} {
			pragmas.Add("_pragma", p)
		}
		if db.rdb, err = sql.Open("sqlite", "file:"+path+"?"+pragmas.Encode()); err != nil {
			return fmt.Errorf("open sqlite: %w", err)
		}
		db.rdb.SetMaxOpenConns(8)
		db.rdb.SetMaxIdleConns(8)
		pragmas.Set("_txlock", "immediate")
		if db.wdb, err = sql.Open("sqlite", "file:"+path+"?"+pragmas.Encode()); err != nil {
			return fmt.Errorf("open sqlite: %w", err)
		}
		db.wdb.SetMaxOpenConns(1)
		db.wdb.SetMaxIdleConns(1)
		db.bdb = db.wdb
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := db.rdb.PingContext(ctx); err != nil {
		db.Close()
		return fmt.Errorf("connect %s: %w", db.dialect, err)
	}
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return fmt.Errorf("migrate: %w", err)
	}
	if err := db.loadCursorKey(ctx); err != nil {
		db.Close()
		return fmt.Errorf("cursor key: %w", err)
	}
	return nil
}

// Close stops the state cache's refresh and the DB's background work
// (cache loads, statement preparation), waits for them, and closes the
// connection pools.
func (db *DB) Close() error {
	db.closeCaches()
	db.bg.stop()
	db.stmts.mu.Lock()
	for _, st := range db.stmts.m {
		st.Close()
	}
	db.stmts.m = nil
	db.stmts.mu.Unlock()
	var errs []error
	if db.bdb != nil && db.bdb != db.wdb {
		errs = append(errs, db.bdb.Close())
	}
	if db.wdb != nil && db.wdb != db.rdb {
		errs = append(errs, db.wdb.Close())
	}
	if db.rdb != nil {
		errs = append(errs, db.rdb.Close())
	}
	return errors.Join(errs...)
}

// Ping reports whether the store answers; /readyz uses it.
func (db *DB) Ping(ctx context.Context) error { return db.rdb.PingContext(ctx) }

// Analyze refreshes the planner statistics. Run it after a bulk load so the
// planner knows how wide each subtree is.
func (db *DB) Analyze(ctx context.Context) (err error) {
	defer wrapOp("sqldb.Analyze", &err)
	_, err = db.wdb.ExecContext(ctx, "ANALYZE")
	return err
}

// migrate applies the embedded migrations of the dialect that have not run,
// each in its own transaction, in file name order. On PostgreSQL an advisory
// lock keeps several starting processes from racing.
//
// On SQLite the migrations run with foreign keys off, checked before each
// commits: a migration that builds a table again (0010) drops the old one,
// and with foreign keys on that would delete, or cascade to, the rows that
// refer to it. The pragma cannot change inside a transaction.
func (db *DB) migrate(ctx context.Context) (err error) {
	conn, err := db.wdb.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if db.dialect == SQLite {
		if _, err := conn.ExecContext(ctx, `PRAGMA foreign_keys = OFF`); err != nil {
			return fmt.Errorf("foreign keys off: %w", err)
		}
		defer func() {
			// The connection goes back to the writer pool: it must check
			// foreign keys again, or Open fails.
			if _, ferr := conn.ExecContext(context.Background(), `PRAGMA foreign_keys = ON`); ferr != nil && err == nil {
				err = fmt.Errorf("foreign keys on: %w", ferr)
			}
		}()
	}
	if db.dialect == Postgres {
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(7223372036854775807)`); err != nil {
			return fmt.Errorf("migration lock: %w", err)
		}
		defer conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock(7223372036854775807)`)
	}
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("create migrations table: %w", err)
	}
	names, err := fs.Glob(migrationFS, "migrations/"+string(db.dialect)+"/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		var n int
		if err := conn.QueryRowContext(ctx, db.rebind(`SELECT COUNT(*) FROM schema_migrations WHERE name = ?`), name).Scan(&n); err != nil {
			return err
		} else if n > 0 {
			continue
		}
		buf, err := fs.ReadFile(migrationFS, name)
		if err != nil {
			return err
		}
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, string(buf)); err != nil {
			tx.Rollback()
			return fmt.Errorf("%s: %w", name, err)
		}
		if step := goMigrations[path.Base(name)]; step != nil {
			now := db.Now().UTC().Truncate(time.Millisecond)
			if err := step(ctx, &Tx{tx: tx, db: db, now: now, began: time.Now(), write: true}); err != nil {
				tx.Rollback()
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		if db.dialect == SQLite {
			if err := foreignKeyCheck(ctx, tx); err != nil {
				tx.Rollback()
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		if _, err := tx.ExecContext(ctx, db.rebind(`INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)`), name, db.Now().UnixMilli()); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		db.Logger.Info("migration applied", "name", name, "dialect", db.dialect)
	}
	return nil
}

// foreignKeyCheck fails if a row of SQLite refers to one that is not there.
func foreignKeyCheck(ctx context.Context, tx *sql.Tx) error {
	var table, parent string
	var rowid sql.NullInt64
	var fk int
	err := tx.QueryRowContext(ctx, `PRAGMA foreign_key_check`).Scan(&table, &rowid, &parent, &fk)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	} else if err != nil {
		return fmt.Errorf("foreign key check: %w", err)
	}
	return fmt.Errorf("foreign key check: row %d of %s refers to a missing row of %s", rowid.Int64, table, parent)
}

// rebind turns the ? placeholders every statement is written with into $n
// for PostgreSQL. No statement of ours has a literal question mark.
func (db *DB) rebind(q string) string {
	if db.dialect != Postgres || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// Tx is a transaction with the DB's dialect, clock and query guard.
type Tx struct {
	tx     *sql.Tx
	db     *DB
	now    time.Time
	began  time.Time // when it began, by the monotonic clock as well
	write  bool
	rev    int64 // see deviceRev; 0 until asked for
	events bool  // the transaction wrote events: wake the relay on commit

	// claim, when set, is the idempotency claim whose transaction this
	// one is a savepoint of (see IdempotencyService); ended says its
	// Commit or Rollback ran.
	claim     *claim
	savepoint string
	ended     bool
}

// beginTx opens a write transaction (on the single-writer pool for SQLite).
// In a request that holds an idempotency claim it joins the claim's
// transaction, so that the request's effects commit with its answer.
func (db *DB) beginTx(ctx context.Context) (*Tx, error) {
	if c := claimOf(ctx, db); c != nil {
		return c.join(ctx)
	}
	tx, err := db.wdb.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	return &Tx{tx: tx, db: db, now: db.Now().UTC().Truncate(time.Millisecond), began: time.Now(), write: true}, nil
}

// beginBgTx opens a write transaction of the event pipeline, on its own
// pool (see bdb).
func (db *DB) beginBgTx(ctx context.Context) (*Tx, error) {
	tx, err := db.bdb.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	return &Tx{tx: tx, db: db, now: db.Now().UTC().Truncate(time.Millisecond), write: true}, nil
}

// lockTenantTree serialises the writes of a tenant that read a path and
// store one derived from it (a new node or device under a node, a move)
// with the subtree moves that rewrite paths. It takes the tenant row's lock,
// which every write of the tenant takes anyway to advance the event
// sequence, before the path is read; a move holds it until it commits.
// Without it, on PostgreSQL's READ COMMITTED, a move committing between the
// read and the write leaves the write with a stale path. SQLite has one
// writer, so it needs nothing; reads need nothing either.
func (tx *Tx) lockTenantTree(ctx context.Context, tenantID int64) (locked bool, err error) {
	if !tx.write || tx.db.dialect != Postgres {
		return false, nil
	}
	_, err = tx.ExecContext(ctx, `SELECT id FROM tenants WHERE id = ? FOR UPDATE`, tenantID)
	return err == nil, err
}

// deviceRev returns the rev that the transaction stamps on the device rows
// it writes (see migration 0002): on PostgreSQL the transaction's id, on
// SQLite the next value of a counter that only this transaction advances.
func (tx *Tx) deviceRev(ctx context.Context) (int64, error) {
	if tx.rev != 0 {
		return tx.rev, nil
	}
	q := `UPDATE counters SET value = value + 1 WHERE name = 'device_rev' RETURNING value`
	if tx.db.dialect == Postgres {
		q = `SELECT pg_current_xact_id()::text::bigint`
	}
	if err := tx.QueryRowContext(ctx, q).Scan(&tx.rev); err != nil {
		return 0, fmt.Errorf("device rev: %w", err)
	}
	return tx.rev, nil
}

// beginRead opens a read-only transaction, so a multi-statement read sees
// one snapshot. PostgreSQL needs REPEATABLE READ for that: under its
// default, READ COMMITTED, every statement takes a new snapshot. SQLite in
// WAL mode keeps the snapshot of a transaction's first read.
func (db *DB) beginRead(ctx context.Context) (*Tx, error) {
	opts := &sql.TxOptions{}
	if db.dialect == Postgres {
		opts = &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead}
	}
	tx, err := db.rdb.BeginTx(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	return &Tx{tx: tx, db: db, now: db.Now().UTC().Truncate(time.Millisecond)}, nil
}

// Commit commits the transaction.
func (tx *Tx) Commit() error {
	if tx.claim != nil {
		return tx.claim.end(tx, true)
	}
	err := tx.tx.Commit()
	if err == nil && tx.events {
		tx.db.waiters.wake()
	}
	if tx.write && tx.db.dialect == SQLite {
		tx.db.stmts.mu.Lock()
		pending := len(tx.db.stmts.pending) > 0
		tx.db.stmts.mu.Unlock()
		if pending {
			// Not here: a bulk load commits on a connection it still holds.
			tx.db.bg.Go(tx.db.preparePending)
		}
	}
	return err
}

// Rollback aborts the transaction; after Commit it is a no-op.
func (tx *Tx) Rollback() error {
	if tx.claim != nil {
		return tx.claim.end(tx, false)
	}
	return tx.tx.Rollback()
}

func (tx *Tx) guard(q string, args []any) (string, error) {
	if len(args) > herd.MaxQueryParams {
		// A scoped query carries a few node paths; this many parameters
		// means someone is shipping id lists to the database.
		tx.db.metrics.refused.Inc()
		return "", fmt.Errorf("sqldb: statement with %d parameters refused (limit %d)", len(args), herd.MaxQueryParams)
	}
	if tx.db.QueryHook != nil {
		tx.db.QueryHook(q, args)
	}
	return tx.db.rebind(q), nil
}

// ExecContext runs a statement.
func (tx *Tx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	q, err := tx.guard(q, args)
	if err != nil {
		return nil, err
	}
	return tx.tx.ExecContext(ctx, q, args...)
}

// QueryContext runs a query.
func (tx *Tx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	q, err := tx.guard(q, args)
	if err != nil {
		return nil, err
	}
	return tx.tx.QueryContext(ctx, q, args...)
}

// QueryRowContext runs a query that returns one row.
func (tx *Tx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	q, err := tx.guard(q, args)
	if err != nil {
		// Let Scan report the refusal: an impossible statement fails.
		return tx.tx.QueryRowContext(ctx, "SELECT guard_refused_statement_with_too_many_parameters")
	}
	return tx.tx.QueryRowContext(ctx, q, args...)
}

// stmtCache holds statements prepared on SQLite's single writer
// connection. modernc's SQLite parses every statement it is given, and the
// ingest statements are long; PostgreSQL's driver caches prepared
// statements itself. A statement is prepared after the transaction that
// first ran it: the writer pool's one connection is busy until then.
type stmtCache struct {
	mu      sync.Mutex
	m       map[string]*sql.Stmt
	pending map[string]bool
}

// maxCachedStmts bounds the cache: statement texts vary with the fields a
// batch carries, a few shapes in practice.
const maxCachedStmts = 256

// stmt returns q prepared for this transaction, or nil to run it plainly.
func (tx *Tx) stmt(ctx context.Context, q string) *sql.Stmt {
	db := tx.db
	if db.dialect != SQLite || !tx.write {
		return nil
	}
	db.stmts.mu.Lock()
	defer db.stmts.mu.Unlock()
	if st, ok := db.stmts.m[q]; ok {
		return tx.tx.StmtContext(ctx, st)
	}
	if len(db.stmts.m)+len(db.stmts.pending) < maxCachedStmts {
		if db.stmts.pending == nil {
			db.stmts.pending = map[string]bool{}
		}
		db.stmts.pending[q] = true
	}
	return nil
}

// preparePending prepares the statements that transactions asked for,
// once the writer connection is free.
func (db *DB) preparePending(ctx context.Context) {
	db.stmts.mu.Lock()
	pending := db.stmts.pending
	db.stmts.pending = nil
	db.stmts.mu.Unlock()
	for q := range pending {
		st, err := db.wdb.PrepareContext(ctx, q)
		if err != nil {
			continue // the plain path reports the error
		}
		db.stmts.mu.Lock()
		if db.stmts.m == nil {
			db.stmts.m = map[string]*sql.Stmt{}
		}
		db.stmts.m[q] = st
		db.stmts.mu.Unlock()
	}
}

// execCached is ExecContext through the statement cache.
func (tx *Tx) execCached(ctx context.Context, q string, args ...any) (sql.Result, error) {
	q, err := tx.guard(q, args)
	if err != nil {
		return nil, err
	}
	if st := tx.stmt(ctx, q); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return tx.tx.ExecContext(ctx, q, args...)
}

// execChunk runs one chunk of a multi-row write. A full chunk's text is
// the same each time and goes through the statement cache (SQLite's parser
// is a good part of a small row's cost); a remainder's length varies, so it
// runs plainly and leaves the cache's room to the statements that repeat.
func (tx *Tx) execChunk(ctx context.Context, full bool, q string, args ...any) (sql.Result, error) {
	if full {
		return tx.execCached(ctx, q, args...)
	}
	return tx.ExecContext(ctx, q, args...)
}

// queryChunk is execChunk for a write that returns rows.
func (tx *Tx) queryChunk(ctx context.Context, full bool, q string, args ...any) (*sql.Rows, error) {
	if full {
		return tx.queryCached(ctx, q, args...)
	}
	return tx.QueryContext(ctx, q, args...)
}

// queryCached is QueryContext through the statement cache.
func (tx *Tx) queryCached(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	q, err := tx.guard(q, args)
	if err != nil {
		return nil, err
	}
	if st := tx.stmt(ctx, q); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return tx.tx.QueryContext(ctx, q, args...)
}

// insertID inserts a row and returns its id. An id space that ran out is
// told apart from everything else (herd.ErrIDSpaceExhausted), never
// passed on as a duplicate.
func (tx *Tx) insertID(ctx context.Context, q string, args ...any) (int64, error) {
	var id int64
	err := tx.QueryRowContext(ctx, q+" RETURNING id", args...).Scan(&id)
	if err != nil {
		c := idguard.ClassifyInsert(err)
		if tx.db.dialect == SQLite {
			// An AUTOINCREMENT table at the largest rowid answers
			// SQLITE_FULL, as a full disk does; its counter tells them
			// apart. The statement names its table third.
			if f := strings.Fields(q); len(f) > 2 {
				c = idguard.ClassifySQLite(ctx, tx.db.rdb, f[2], err)
			}
		}
		if errors.Is(c, herd.ErrIDSpaceExhausted) {
			tx.db.Logger.Error("id space exhausted", "statement", strings.Fields(q)[0]+" "+strings.Join(strings.Fields(q)[1:3], " "), "err", c)
			return 0, c
		}
	}
	return id, err
}

// formatError turns driver errors into application errors where the cause
// is the caller's: a unique violation becomes ECONFLICT.
func formatError(err error, conflictMsg string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, herd.ErrIDSpaceExhausted) {
		return err
	}
	if c := idguard.Classify(err); errors.Is(c, herd.ErrIDSpaceExhausted) {
		return c
	}
	if isUniqueViolation(err) {
		return herd.Errorf(herd.ECONFLICT, "%s", conflictMsg)
	}
	return err
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23505"
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		return sqErr.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || sqErr.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// hashToken returns the stored form of a token secret. Secrets carry 256
// random bits, so a fast hash is enough: there is nothing to brute-force.
func hashToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func msToTime(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// asActor runs fn in a read transaction on behalf of the request's actor:
// the shape of every lookup a service exports.
func asActor[T any](ctx context.Context, db *DB, fn func(tx *Tx, a *herd.Actor) (T, error)) (T, error) {
	var zero T
	a, err := actor(ctx)
	if err != nil {
		return zero, err
	}
	tx, err := db.beginRead(ctx)
	if err != nil {
		return zero, err
	}
	defer tx.Rollback()
	return fn(tx, a)
}

// actor returns the actor of the request or EUNAUTHORIZED.
func actor(ctx context.Context) (*herd.Actor, error) {
	a := herd.ActorFromContext(ctx)
	if a == nil {
		return nil, herd.Errorf(herd.EUNAUTHORIZED, "authentication required")
	}
	return a, nil
}

// SQL returns the underlying read pool for tools that inspect the database
// directly (benchmarks, the id doctor). Application code uses the services.
func (db *DB) SQL() *sql.DB { return db.rdb }

// readPool is where the background work (the pipeline, the command queue,
// pruning) reads: its own pool on PostgreSQL, the readers' on SQLite, where
// bdb is the one writer connection and a read there waits behind ingest.
func (db *DB) readPool() *sql.DB {
	if db.dialect == Postgres {
		return db.bdb
	}
	return db.rdb
}

// Rebind rewrites ? placeholders for the DB's dialect.
func (db *DB) Rebind(q string) string { return db.rebind(q) }
