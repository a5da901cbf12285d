package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/herd-iot/herd"
)

// Error codes the HTTP edge adds to the domain's. Like herd's codes they
// reach clients, so they are append-only.
const (
	// EMETHOD: the path exists, the method does not (405; Allow lists the
	// methods that do).
	EMETHOD = "method_not_allowed"
	// ETIMEOUT: the request ran past its deadline (503; retry later).
	ETIMEOUT = "timeout"
	// EMEDIATYPE: a body of a type the route does not take (415), such as
	// a JSON Patch (RFC 6902) sent where a merge patch goes.
	EMEDIATYPE = "unsupported_media_type"
)

// statuses maps error codes to HTTP statuses. A code missing here is
// rendered by its family: "invalid_…" as 400, anything else as 500.
var statuses = map[string]int{
	herd.EINVALID:       http.StatusBadRequest,
	herd.EINVALIDFILTER: http.StatusBadRequest,
	herd.EINVALIDSORT:   http.StatusBadRequest,
	herd.EINVALIDCURSOR: http.StatusBadRequest,
	herd.EINVALIDLIMIT:  http.StatusBadRequest,
	herd.EUNAUTHORIZED:  http.StatusUnauthorized,
	herd.EFORBIDDEN:     http.StatusForbidden,
	herd.ENOTFOUND:      http.StatusNotFound,
	herd.ECONFLICT:      http.StatusConflict,
	herd.ETOOLARGE:      http.StatusRequestEntityTooLarge,
	herd.ERESYNC:        http.StatusGone,
	herd.EKEYREUSED:     http.StatusUnprocessableEntity,
	herd.ERATELIMITED:   http.StatusTooManyRequests,
	herd.EIDEXHAUSTED:   http.StatusServiceUnavailable,
	herd.EPRECONDITION:  http.StatusPreconditionFailed,
	EMEDIATYPE:          http.StatusUnsupportedMediaType,
	herd.EINTERNAL:      http.StatusInternalServerError,
	EMETHOD:             http.StatusMethodNotAllowed,
	ETIMEOUT:            http.StatusServiceUnavailable,
}

// StatusOf returns the HTTP status of an error code.
func StatusOf(code string) int {
	if s, ok := statuses[code]; ok {
		return s
	} else if strings.HasPrefix(code, "invalid") {
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// statusClientClosed is what the request log records when the client went
// away before the answer (nginx's 499): not a server failure, so it must not
// page anyone, and the client never sees it.
const statusClientClosed = 499

// ErrorResponse is the body of every error answer.
type ErrorResponse struct {
	Error ErrorBody `json:"error"`
}

// ErrorBody carries a stable code to branch on and a message for people.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error renders err as a JSON error answer. Application errors show their
// code and message; anything else is an internal error whose cause goes to
// the request log line and never to the client.
func Error(w http.ResponseWriter, r *http.Request, err error) {
	code, message := herd.ErrorCode(err), herd.ErrorMessage(err)
	var me *methodError
	switch {
	case errors.As(err, &me):
		code, message = EMETHOD, me.Error()
	case errors.Is(err, herd.ErrIDSpaceExhausted):
		// Not a conflict: the table's ids ran out, and no retry helps
		// until an operator widens the column (herd doctor ids).
		code, message = herd.EIDEXHAUSTED, "the store cannot take new rows of this kind: its id column reached its limit. This is not a duplicate; an operator must widen the column (see herd doctor ids)"
	case code == herd.EINTERNAL && errors.Is(r.Context().Err(), context.DeadlineExceeded):
		code, message = ETIMEOUT, "the request took too long and was stopped; try again or narrow it"
	}
	status := StatusOf(code)
	if code == herd.EINTERNAL && errors.Is(r.Context().Err(), context.Canceled) {
		status = statusClientClosed
	}
	if rw, ok := w.(*responseWriter); ok {
		rw.err = err
	}
	if status == http.StatusUnauthorized {
		// RFC 6750: tell the client which scheme to use; say the token was
		// bad when one was presented.
		challenge := `Bearer realm="herd"`
		if r.Header.Get("Authorization") != "" {
			challenge += `, error="invalid_token"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
	}
	writeJSON(w, status, ErrorResponse{Error: ErrorBody{Code: code, Message: message}})
}

// methodError is a request for a path that exists with a method it lacks.
type methodError struct {
	method, path, allow string
}

func (e *methodError) Error() string {
	return fmt.Sprintf("method %s is not allowed on %s (allowed: %s)", e.method, e.path, e.allow)
}
