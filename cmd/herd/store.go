package main

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// schemeRE matches the scheme of a URL (RFC 3986: a letter, then letters,
// digits, "+", "-" or "."), followed by its colon. A path that starts with
// "/" or "." never matches, so ./a:b.db is a path.
var schemeRE = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*):`)

// errSQLiteParams refuses a SQLite store with URI parameters. The store
// opens its file with pragmas of its own (WAL, synchronous=FULL, …) and
// cuts the name at "?": a ?_pragma= or ?mode= given with --store would be
// ignored without a word, and a "#" would end the file's name.
var errSQLiteParams = errors.New(`a SQLite store is a file name without "?" or "#": herd sets the file's pragmas itself (WAL, synchronous=FULL) and would ignore ?parameters`)

// normalizeStore checks a --store value and returns the DSN the store
// package understands: a postgres:// or postgresql:// URL (the scheme in
// any case, as URLs allow), a SQLite file as sqlite:PATH, file:PATH or a
// plain path. Anything else is refused: a DSN herd does not know must not
// become a SQLite file named after it.
func normalizeStore(store string) (string, error) {
	m := schemeRE.FindStringSubmatch(store)
	if m == nil {
		if strings.ContainsAny(store, "?#") {
			return "", errSQLiteParams
		}
		return store, nil // a plain path
	}
	scheme, rest := strings.ToLower(m[1]), store[len(m[0]):]
	switch scheme {
	case "postgres", "postgresql":
		if !strings.HasPrefix(rest, "//") {
			return "", fmt.Errorf("want a URL such as %s://user@host:5432/db", scheme)
		}
		return scheme + ":" + rest, nil
	case "sqlite", "file":
		if strings.HasPrefix(rest, "//") && !strings.HasPrefix(rest, "///") {
			return "", fmt.Errorf("a SQLite store is %s:PATH (or %s:///ABSOLUTE/PATH), not a URL with a host", scheme, scheme)
		}
		if rest == "" {
			return "", errors.New("names no file")
		}
		if strings.ContainsAny(rest, "?#") {
			return "", errSQLiteParams
		}
		return "sqlite:" + rest, nil
	case "mysql", "mariadb":
		return "", fmt.Errorf("herd's store runs on SQLite or PostgreSQL; MySQL and MariaDB are for herd doctor ids --dsn only")
	}
	return "", fmt.Errorf("unknown scheme %q: want a postgres:// or postgresql:// URL, sqlite:PATH or a file path", m[1])
}
