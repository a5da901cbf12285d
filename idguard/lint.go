package idguard

import (
	"fmt"
	"regexp"
	"strings"
)

// Finding is an id or foreign-key column a migration declares narrower
// than 64 bits.
type Finding struct {
	Line   int
	Column string
	Type   string
}

func (f Finding) String() string {
	return fmt.Sprintf("line %d: column %s is %s, narrower than 64 bits: ids and the columns that reference them must be BIGINT", f.Line, f.Column, f.Type)
}

var (
	columnDef = regexp.MustCompile(`(?i)^\s*(?:ALTER\s+TABLE\s+\S+\s+ADD\s+(?:COLUMN\s+)?)?"?([a-z_][a-z0-9_]*)"?\s+([a-z]+[a-z0-9]*(?:\s+unsigned)?)\b(.*)$`)
	notColumn = map[string]bool{"create": true, "primary": true, "unique": true, "constraint": true, "foreign": true, "check": true, "insert": true, "update": true, "delete": true, "drop": true, "alter": true, "select": true, "with": true, "set": true, "key": true, "index": true, "from": true, "where": true, "and": true, "or": true, "on": true}
)

// LintMigration finds the id and foreign-key columns that a migration
// declares with a type narrower than 64 bits: a column named id or ending
// in _id, or one that REFERENCES another table, must be BIGINT (BIGSERIAL,
// INT8); on SQLite INTEGER is 64-bit and passes.
func LintMigration(d Dialect, sql string) []Finding {
	var out []Finding
	for i, line := range strings.Split(sql, "\n") {
		if j := strings.Index(line, "--"); j >= 0 {
			line = line[:j]
		}
		line = createPrefix.ReplaceAllString(line, "")
		for _, part := range strings.Split(line, ",") {
			if f, ok := lintPart(d, part, i+1); ok {
				out = append(out, f)
			}
		}
	}
	return out
}

// createPrefix is the head of a CREATE TABLE, so that a column on the
// same line is read too.
var createPrefix = regexp.MustCompile(`(?i)^\s*create\s+table\s+(?:if\s+not\s+exists\s+)?\S+\s*\(`)

func lintPart(d Dialect, line string, n int) (Finding, bool) {
	m := columnDef.FindStringSubmatch(line)
	if m == nil || notColumn[strings.ToLower(m[1])] {
		return Finding{}, false
	}
	name, typ, rest := strings.ToLower(m[1]), strings.ToLower(m[2]), strings.ToLower(m[3])
	idLike := name == "id" || strings.HasSuffix(name, "_id") || strings.Contains(rest, "references")
	if idLike && narrow(d, typ) {
		return Finding{Line: n, Column: m[1], Type: m[2]}, true
	}
	return Finding{}, false
}

func narrow(d Dialect, typ string) bool {
	typ = strings.TrimSuffix(typ, " unsigned")
	switch typ {
	case "bigint", "bigserial", "int8", "serial8":
		return false
	case "integer":
		return d != SQLite // SQLite's INTEGER is 64-bit
	case "int", "int4", "int2", "smallint", "mediumint", "tinyint", "serial", "serial4", "smallserial", "serial2":
		return true
	}
	return false // not an integer type (TEXT ids and the like are the schema's business)
}
