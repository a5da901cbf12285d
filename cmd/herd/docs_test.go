package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDocs_Links: the README, DEVELOPERS.md and the pages in docs/ link
// only to files of the repository that exist. A newcomer reads them in a
// fresh clone, where nothing beside the repository is there; so a path
// that climbs out of it is refused even when it is only named in code
// (`../shared/…`), not linked.
func TestDocs_Links(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	pages := []string{"README.md", "DEVELOPERS.md"}
	more, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range more {
		rel, _ := filepath.Rel(root, p)
		pages = append(pages, rel)
	}
	if len(more) == 0 {
		t.Fatal("docs/ has no pages")
	}
	for _, page := range pages {
		for _, bad := range checkLinks(root, page) {
			t.Errorf("%s: %s", page, bad)
		}
	}
}

var (
	fenceRE    = regexp.MustCompile("(?ms)^```.*?^```$")
	mdLinkRE   = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	climbingRE = regexp.MustCompile(`(?:^|[\s("'\x60\[])((?:\./)?(?:\.\./)+[^\s)"'\x60\]]*)`)
)

// checkLinks returns what is wrong with the links of one page: a target
// outside root, or one that does not exist. Web links and anchors within
// the page are not followed.
func checkLinks(root, page string) []string {
	body, err := os.ReadFile(filepath.Join(root, page))
	if err != nil {
		return []string{err.Error()}
	}
	text := fenceRE.ReplaceAllString(string(body), "")
	dir := filepath.Dir(filepath.Join(root, page))
	inside := func(target string) (string, bool) {
		abs := filepath.Clean(filepath.Join(dir, target))
		rel, err := filepath.Rel(root, abs)
		return abs, err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
	}
	var bad []string
	for _, m := range mdLinkRE.FindAllStringSubmatch(text, -1) {
		target, _, _ := strings.Cut(m[1], "#")
		if target == "" || strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
			continue
		}
		abs, ok := inside(target)
		if !ok {
			bad = append(bad, "links outside the repository: "+m[1])
		} else if _, err := os.Stat(abs); err != nil {
			bad = append(bad, "links to a file that does not exist: "+m[1])
		}
	}
	for _, m := range climbingRE.FindAllStringSubmatch(text, -1) {
		if _, ok := inside(m[1]); !ok {
			bad = append(bad, "names a path outside the repository: "+m[1])
		}
	}
	return bad
}

// TestDocs_LinksCheck: the check itself finds what it must.
func TestDocs_LinksCheck(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "docs"), 0o755)
	os.WriteFile(filepath.Join(root, "docs", "here.md"), nil, 0o644)
	page := "See [here](docs/here.md#top), [web](https://example.com), [anchor](#quickstart),\n" +
		"[out](../shared/ARCHITECTURE.md), [gone](docs/gone.md), `../shared/STYLE.md` and [up](docs/../../x.md).\n" +
		"```sh\ncd ../elsewhere # in a code block: not a link\n```\n"
	os.WriteFile(filepath.Join(root, "README.md"), []byte(page), 0o644)
	got := strings.Join(checkLinks(root, "README.md"), "\n")
	for _, want := range []string{"outside the repository: ../shared/ARCHITECTURE.md", "does not exist: docs/gone.md",
		"names a path outside the repository: ../shared/STYLE.md", "outside the repository: docs/../../x.md"} {
		if !strings.Contains(got, want) {
			t.Errorf("the check missed %q; it found:\n%s", want, got)
		}
	}
	for _, ok := range []string{"here.md", "example.com", "#quickstart", "elsewhere"} {
		if strings.Contains(got, ok) {
			t.Errorf("the check refused %q:\n%s", ok, got)
		}
	}
}
