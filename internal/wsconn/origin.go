package wsconn

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Origins is the policy for requests that come from a web page on another
// origin: which pages may open herd's WebSockets and read its REST answers
// (CORS). A request without an Origin header is not from a page (the CLI,
// a Go client, curl) and is never refused by it, and a page of herd's own
// origin (its Origin's host is the request's Host) is always allowed:
// the default, an empty list, allows nothing more than that.
//
// Browsers send an Origin with every WebSocket handshake and cross-origin
// fetch, and a page cannot forge it; the policy is what keeps a page on
// another site from using a ticket or a token that it got hold of.
type Origins struct {
	any    bool
	listed []string // canonical scheme://host[:port], sorted
}

// ParseOrigins reads a comma-separated list of origins
// ("https://app.example.com,http://localhost:5173"), or "*" for any origin.
// An origin is a scheme (http or https), a host and an optional port, with
// no path; the default port of the scheme may be left out.
func ParseOrigins(list string) (*Origins, error) {
	o := &Origins{}
	for item := range strings.SplitSeq(list, ",") {
		item = strings.TrimSpace(item)
		switch {
		case item == "":
			continue
		case item == "*":
			o.any = true
			continue
		}
		c, err := canonical(item)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(o.listed, c) {
			o.listed = append(o.listed, c)
		}
	}
	if o.any && len(o.listed) > 0 {
		return nil, fmt.Errorf("allowed origins: %q allows any origin; name no others with it", "*")
	}
	slices.Sort(o.listed)
	return o, nil
}

// canonical returns an origin as browsers send it: lower case, without the
// scheme's default port.
func canonical(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("allowed origins: %q: %w", s, err)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", fmt.Errorf("allowed origins: %q: want http://host[:port] or https://host[:port]", s)
	}
	if u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("allowed origins: %q: an origin is a scheme, a host and a port, with no path", s)
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host, nil
}

// Any reports whether every origin is allowed ("*").
func (o *Origins) Any() bool { return o != nil && o.any }

// String lists the policy as ParseOrigins reads it.
func (o *Origins) String() string {
	if o.Any() {
		return "*"
	} else if o == nil {
		return ""
	}
	return strings.Join(o.listed, ",")
}

// SameOrigin reports whether the request comes from a page of herd's own
// origin: the host of its Origin is the Host it was sent to. The scheme is
// not compared, as behind a proxy that ends TLS herd cannot know its own.
func SameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	u, err := url.Parse(origin)
	return origin != "" && err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

// Allows reports whether the request may be served: it has no Origin, or
// comes from herd's own origin, or from one the policy allows.
func (o *Origins) Allows(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	return origin == "" || SameOrigin(r) || o.AllowsOrigin(origin)
}

// AllowsOrigin reports whether the policy allows pages of origin, the value
// of an Origin header. Herd's own origin is not its business (see Allows).
func (o *Origins) AllowsOrigin(origin string) bool {
	if o == nil || origin == "" {
		return false
	} else if o.any {
		return true
	}
	c, err := canonical(origin)
	if err != nil {
		return false // "null" (a file, a sandboxed frame) among others
	}
	_, found := slices.BinarySearch(o.listed, c)
	return found
}
