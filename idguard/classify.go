package idguard

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"github.com/go-sql-driver/mysql"
	"github.com/herd-iot/herd"
	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// ExhaustedError is an insert that failed because its ids ran out.
type ExhaustedError struct {
	// Engine and Code say what the database answered, Detail its words.
	Engine, Code, Detail string
	Err                  error
}

func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("id space exhausted (%s %s: %s): the id column reached the largest value of its type or sequence; widen it to BIGINT (herd doctor ids widen), it is not a duplicate", e.Engine, e.Code, e.Detail)
}

// Is makes errors.Is(err, herd.ErrIDSpaceExhausted) hold.
func (e *ExhaustedError) Is(target error) bool { return target == herd.ErrIDSpaceExhausted }

func (e *ExhaustedError) Unwrap() error { return e.Err }

// typeMaxima are the values an auto-increment sticks at when it runs out.
var typeMaxima = map[uint64]bool{
	1<<7 - 1: true, 1<<8 - 1: true, 1<<15 - 1: true, 1<<16 - 1: true, 1<<23 - 1: true, 1<<24 - 1: true,
	1<<31 - 1: true, 1<<32 - 1: true, 1<<63 - 1: true, 1<<64 - 1: true,
}

// duplicatePrimary matches MySQL's 1062 on a primary key; the entry of a
// composite key joins its parts with '-', the auto-increment part last.
var duplicatePrimary = regexp.MustCompile(`Duplicate entry '(?:[^']*-)?(\d+)' for key '(?:[^']*\.)?PRIMARY'`)

// Classify returns an *ExhaustedError for an error that means the ids ran
// out, and err itself otherwise:
//   - MySQL/MariaDB 1062 on the primary key when the "duplicate" is the
//     largest value of an integer type (the allocator sticks there), 1467
//     (the engine could not give an auto-increment value) and 167 (out of
//     range for the auto-increment);
//   - PostgreSQL 2200H (a sequence reached its limit);
//
// SQLite answers SQLITE_FULL both for a full disk and for an AUTOINCREMENT
// table at the largest rowid: ClassifySQLite tells them apart.
//
// PostgreSQL's 22003 (out of range) is exhausted only on an insert that
// lets the id default: ClassifyInsert.
func Classify(err error) error {
	if err == nil {
		return nil
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case 1062:
			if m := duplicatePrimary.FindStringSubmatch(me.Message); m != nil {
				if v, perr := strconv.ParseUint(m[1], 10, 64); perr == nil && typeMaxima[v] {
					return &ExhaustedError{Engine: "mysql", Code: "1062", Detail: me.Message, Err: err}
				}
			}
		case 1467, 167:
			return &ExhaustedError{Engine: "mysql", Code: strconv.Itoa(int(me.Number)), Detail: me.Message, Err: err}
		}
		return err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		if pe.Code == "2200H" {
			return &ExhaustedError{Engine: "postgres", Code: pe.Code, Detail: pe.Message, Err: err}
		}
		return err
	}
	return err
}

// ClassifySQLite is Classify for an insert into table on SQLite: its
// SQLITE_FULL means exhausted ids only when the table's AUTOINCREMENT
// counter is at the largest rowid (otherwise the disk is full).
func ClassifySQLite(ctx context.Context, db *sql.DB, table string, err error) error {
	var se *sqlite.Error
	if !errors.As(err, &se) || se.Code() != sqlite3.SQLITE_FULL {
		return Classify(err)
	}
	var seq int64
	if db.QueryRowContext(ctx, `SELECT seq FROM sqlite_sequence WHERE name = ?`, table).Scan(&seq) == nil && seq == 1<<63-1 {
		return &ExhaustedError{Engine: "sqlite", Code: "SQLITE_FULL", Detail: se.Error(), Err: err}
	}
	return err
}

// ClassifyInsert is Classify for an insert that lets its id column take
// the default: there, PostgreSQL's 22003 means the sequence outran the
// column (an integer column on a bigint sequence).
func ClassifyInsert(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "22003" {
		return &ExhaustedError{Engine: "postgres", Code: pe.Code, Detail: pe.Message, Err: err}
	}
	return Classify(err)
}
