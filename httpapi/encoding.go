package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/herd-iot/herd"
)

// writeJSON writes v as the JSON body of an answer with the given status.
// It encodes before it sends the status, so that a value JSON cannot hold
// (an infinity, a time past the year 9999) is a 500 with an error body, not
// a 200 with an empty one.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// Messages quote user input ("<token>"); JSON with nosniff is never
	// rendered as HTML, so escaping it would only hurt readability.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		buf.Reset()
		status = http.StatusInternalServerError
		_ = enc.Encode(ErrorResponse{Error: ErrorBody{Code: herd.EINTERNAL, Message: "the answer could not be encoded"}})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	// A write error here means the client went away mid-answer; the
	// status is already out, so there is nothing left to tell anyone.
	_, _ = w.Write(buf.Bytes())
}

// decodeJSON reads a request body of at most limit bytes into v. Unknown
// fields, values of the wrong type, trailing data and malformed JSON are
// EINVALID naming the problem; an oversize body is ETOOLARGE.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	if r.ContentLength > limit {
		// Refuse before reading a byte of it.
		return tooLarge(limit)
	}
	buf, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return bodyError(err, limit)
	}
	// encoding/json turns invalid UTF-8 in a string into U+FFFD without a
	// word, and keeps it as it came in a json.RawMessage (command args),
	// which PostgreSQL then refuses: text that is not UTF-8 is refused
	// here, naming the field, before anything reads it.
	if !utf8.Valid(buf) {
		return herd.Errorf(herd.EINVALID, "%s is not valid UTF-8 text", invalidUTF8Field(buf))
	}
	dec := json.NewDecoder(bytes.NewReader(buf))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError(err, limit)
	}
	// A second value after the object is a client bug (two objects
	// concatenated, a stray bracket), not something to ignore.
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		if err != nil {
			return bodyError(err, limit)
		}
		return herd.Errorf(herd.EINVALID, "request body holds more than one JSON value")
	}
	return nil
}

// decodeOptionalJSON is decodeJSON for endpoints whose body may be empty.
func decodeOptionalJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	if r.ContentLength == 0 {
		return nil
	}
	err := decodeJSON(w, r, limit, v)
	if errors.Is(err, errEmptyBody) {
		return nil // chunked body with nothing in it
	}
	return err
}

var errEmptyBody = herd.Errorf(herd.EINVALID, "request body is empty; send a JSON object")

func tooLarge(limit int64) error {
	return herd.Errorf(herd.ETOOLARGE, "request body is larger than %s", formatBytes(limit))
}

// bodyError turns a decoding error into an application error that names
// what is wrong and where.
func bodyError(err error, limit int64) error {
	var maxErr *http.MaxBytesError
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &maxErr):
		return tooLarge(limit)
	case errors.Is(err, io.EOF):
		return errEmptyBody
	case errors.Is(err, io.ErrUnexpectedEOF):
		return herd.Errorf(herd.EINVALID, "request body ends in the middle of a JSON value")
	case errors.As(err, &syntaxErr):
		return herd.Errorf(herd.EINVALID, "malformed JSON at byte %d: %s", syntaxErr.Offset, strings.TrimPrefix(syntaxErr.Error(), "json: "))
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return herd.Errorf(herd.EINVALID, "request body must be %s, not %s", describeType(typeErr.Type), typeErr.Value)
		}
		return herd.Errorf(herd.EINVALID, "field %q must be %s, not %s", typeErr.Field, describeType(typeErr.Type), typeErr.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no typed error for DisallowUnknownFields.
		return herd.Errorf(herd.EINVALID, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return herd.Errorf(herd.EINVALID, "malformed request body: %s", strings.TrimPrefix(err.Error(), "json: "))
}

var idType = reflect.TypeFor[id]()

// describeType names a Go type the way a JSON client thinks of it.
func describeType(t reflect.Type) string {
	if t == idType {
		return "an id (a string of digits)"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return t.String()
}

func formatBytes(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// id is an int64 id as it travels in JSON. herd's ids are 64-bit and
// JavaScript numbers lose precision above 2^53, so ids are written as
// strings ("42"); a number (42) is accepted on input because hand-written
// requests send them. An empty string or null is the zero id: not set.
type id int64

// MarshalJSON writes the id as a JSON string.
func (i id) MarshalJSON() ([]byte, error) {
	return strconv.AppendQuote(nil, strconv.FormatInt(int64(i), 10)), nil
}

// UnmarshalJSON reads a JSON string or number holding a non-negative id.
func (i *id) UnmarshalJSON(b []byte) error {
	s := string(b)
	if s == "null" {
		*i = 0
		return nil
	}
	value := "number " + s
	if strings.HasPrefix(s, `"`) {
		unq, err := strconv.Unquote(s)
		if err != nil {
			return &json.UnmarshalTypeError{Value: "string " + s, Type: idType}
		}
		s, value = unq, "string "+s
		if s == "" {
			*i = 0
			return nil
		}
	} else if s == "" || s[0] == '{' || s[0] == '[' || s == "true" || s == "false" {
		return &json.UnmarshalTypeError{Value: jsonKind(s), Type: idType}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return &json.UnmarshalTypeError{Value: value, Type: idType}
	}
	*i = id(n)
	return nil
}

func jsonKind(s string) string {
	switch {
	case strings.HasPrefix(s, "{"):
		return "object"
	case strings.HasPrefix(s, "["):
		return "array"
	}
	return "bool"
}

// pathID parses the {name} wildcard of the request path as an id.
func pathID(r *http.Request, name string) (int64, error) {
	s := r.PathValue(name)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, herd.Errorf(herd.EINVALID, "%s %q in the path is not an id (a positive integer)", name, s)
	}
	return n, nil
}

// queryLimit reads ?limit=N, or def when it is absent. The range is the
// service's to check: each list has its own ceiling.
func queryLimit(r *http.Request, def int) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, herd.Errorf(herd.EINVALIDLIMIT, "limit %q is not a number", v)
	}
	return n, nil
}

// listResponse is the body of answers that return several objects.
type listResponse[T any] struct {
	Items []T `json:"items"`
}
