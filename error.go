package herd

import (
	"errors"
	"fmt"
)

// Application error codes. They travel to clients as the "code" of a JSON
// error body, so they are stable strings: add new ones, never rename.
const (
	EINVALID       = "invalid_request"
	EINVALIDFILTER = "invalid_filter"
	EINVALIDSORT   = "invalid_sort"
	EINVALIDCURSOR = "invalid_cursor"
	EINVALIDLIMIT  = "invalid_limit"
	EUNAUTHORIZED  = "unauthorized"
	EFORBIDDEN     = "forbidden"
	ENOTFOUND      = "not_found"
	ECONFLICT      = "conflict"
	ETOOLARGE      = "payload_too_large"
	// ERESYNC says a client's place in the event log is gone (older than
	// the retention, or from another store): reload through the list
	// endpoints and start again from the head.
	ERESYNC = "resync_required"
	// EKEYREUSED says an Idempotency-Key came back with another request.
	EKEYREUSED = "idempotency_key_reused"
	// ERATELIMITED says the caller sent more requests than its token may.
	ERATELIMITED = "rate_limited"
	// EPRECONDITION says a conditional update (If-Match) found the object
	// at another version than the one the caller last read: someone else
	// changed it meanwhile; read it again and decide.
	EPRECONDITION = "precondition_failed"
	EINTERNAL     = "internal"
)

// Error is an application error: a stable code and a message that is safe to
// show to the caller. Any other error is internal and is reported as
// EINTERNAL without its text.
//
// Err, when set, is the cause: it stays in the chain for errors.Is and
// errors.As and for the logs, and never reaches the caller, who sees only
// Code and Message.
type Error struct {
	Code    string
	Message string
	Err     error
}

// Error implements the error interface.
func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("herd error: code=%s message=%s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("herd error: code=%s message=%s", e.Code, e.Message)
}

// Unwrap returns the cause, so that errors.Is and errors.As see through an
// application error to what made it.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an application error with the given code and message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WrapError returns an application error with the given code and message
// that keeps err as its cause. The message is what the caller sees; the
// cause is for errors.Is, errors.As and the logs, so it may hold details
// that the caller must not.
func WrapError(err error, code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Err: err}
}

// ErrorCode returns the code of the application error in err's chain, or
// EINTERNAL when there is none. A nil error has no code.
func ErrorCode(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the message of the application error in err's chain,
// or a generic message for internal errors so that internals never leak.
func ErrorMessage(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Message
	}
	return "Internal error."
}

// EIDEXHAUSTED says a table's ids ran out: nothing more can be inserted
// until the column is widened. It is not a duplicate, and retrying will
// not help.
const EIDEXHAUSTED = "id_space_exhausted"

// ErrIDSpaceExhausted is the sentinel of an insert that failed because an
// auto-increment, serial, identity or sequence-backed id column reached the
// largest value its type or sequence can hold. Match it with errors.Is.
var ErrIDSpaceExhausted = errors.New("id space exhausted")
