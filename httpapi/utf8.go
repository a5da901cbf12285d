package httpapi

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// invalidUTF8Field names the first place in a JSON body that holds bytes
// that are not UTF-8, as the API spells fields ("name",
// "devices[2].key"), so that the error says which field to fix. It reports
// "request body" when it cannot tell: the bytes lie outside any string, or
// the body is not JSON at all.
func invalidUTF8Field(body []byte) string {
	type frame struct {
		object  bool
		wantKey bool
		key     string
		index   int
	}
	var stack []frame
	path := func(stack []frame) string {
		var b []byte
		for _, f := range stack {
			if f.object {
				if len(b) > 0 {
					b = append(b, '.')
				}
				b = append(b, f.key...)
			} else {
				b = append(b, '[')
				b = strconv.AppendInt(b, int64(f.index), 10)
				b = append(b, ']')
			}
		}
		if len(b) == 0 {
			return "request body"
		}
		return string(b)
	}
	// afterValue moves the innermost container past the value just read.
	afterValue := func() {
		if n := len(stack); n > 0 {
			if stack[n-1].object {
				stack[n-1].wantKey = true
			} else {
				stack[n-1].index++
			}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	for {
		start := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return "request body"
		}
		// The span holds the token and the separators before it, which
		// are ASCII: only the token can be what is not UTF-8.
		bad := !utf8.Valid(body[start:dec.InputOffset()])
		n := len(stack)
		if n > 0 && stack[n-1].object && stack[n-1].wantKey {
			if tok == json.Delim('}') {
				stack = stack[:n-1]
				afterValue()
				continue
			}
			key, _ := tok.(string)
			if bad {
				// The key itself is the bad text; name the object it is in.
				if p := path(stack[:n-1]); p != "request body" {
					return "a field name in " + p
				}
				return "a field name"
			}
			stack[n-1].key, stack[n-1].wantKey = key, false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{object: true, wantKey: true})
		case json.Delim('['):
			stack = append(stack, frame{})
		case json.Delim(']'):
			stack = stack[:n-1]
			afterValue()
		default:
			if bad {
				return path(stack)
			}
			afterValue()
		}
	}
}
