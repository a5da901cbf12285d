package main

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// module is the import path of the repository's root package.
const module = "github.com/herd-iot/herd"

// repoPackages returns the repository's packages by their directory ("."
// for the root) with the packages of the repository each imports outside
// its tests, by directory too.
func repoPackages(t *testing.T, root string) map[string][]string {
	t.Helper()
	pkgs := map[string][]string{}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		dir, _ := filepath.Rel(root, filepath.Dir(path))
		dir = filepath.ToSlash(dir)
		imports := pkgs[dir]
		for _, imp := range f.Imports {
			p := strings.Trim(imp.Path.Value, `"`)
			if p == module {
				p = "."
			} else if rest, ok := strings.CutPrefix(p, module+"/"); ok {
				p = rest
			} else {
				continue
			}
			if !slices.Contains(imports, p) {
				imports = append(imports, p)
			}
		}
		pkgs[dir] = imports
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

var backticked = regexp.MustCompile("`([^`]+)`")

// TestDocs_LayoutListsEveryPackage: DEVELOPERS.md's layout table has a row
// for every package of the repository, so a newcomer finds each one.
func TestDocs_LayoutListsEveryPackage(t *testing.T) {
	t.Parallel()
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	body, err := os.ReadFile(filepath.Join(root, "DEVELOPERS.md"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if cells := strings.Split(line, "|"); len(cells) > 2 && strings.HasPrefix(line, "| `") {
			for _, m := range backticked.FindAllStringSubmatch(cells[1], -1) {
				listed[strings.TrimSuffix(m[1], "/")] = true
			}
		}
	}
	for dir := range repoPackages(t, root) {
		name := dir
		if dir == "." {
			name = "*.go"
		}
		if !listed[name] {
			t.Errorf("DEVELOPERS.md's layout table has no row for %s/", dir)
		}
	}
}

// TestDocs_ArchitectureImports: docs/architecture.md's package table has a
// row for every package, and its "imports of herd's own" column says what
// the package's code (outside its tests) imports of the repository.
func TestDocs_ArchitectureImports(t *testing.T) {
	t.Parallel()
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	body, err := os.ReadFile(filepath.Join(root, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	name := func(p string) string {
		if p == "." {
			return "herd"
		}
		return p
	}
	documented := map[string][]string{}
	for _, line := range strings.Split(string(body), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) != 5 || !strings.HasPrefix(line, "| `") {
			continue
		}
		pkg := backticked.FindStringSubmatch(cells[1])
		if pkg == nil {
			continue
		}
		imports := []string{}
		for _, m := range backticked.FindAllStringSubmatch(cells[3], -1) {
			imports = append(imports, m[1])
		}
		if strings.TrimSpace(cells[3]) != "none" && len(imports) == 0 {
			t.Errorf("architecture.md: the row of %s names no imports and does not say none: %q", pkg[1], cells[3])
		}
		documented[pkg[1]] = imports
	}
	for dir, imports := range repoPackages(t, root) {
		pkg := name(dir)
		doc, ok := documented[pkg]
		if !ok {
			t.Errorf("architecture.md's package table has no row for %s", pkg)
			continue
		}
		var want []string
		for _, p := range imports {
			want = append(want, name(p))
		}
		slices.Sort(want)
		slices.Sort(doc)
		if !slices.Equal(doc, want) {
			t.Errorf("architecture.md says %s imports %v; its code imports %v", pkg, doc, want)
		}
	}
}
