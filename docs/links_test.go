// Package docs holds deepsim's documentation pages; its test checks that
// every link in them and in the README reaches a file and, where it names
// one, a heading.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	link    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	heading = regexp.MustCompile(`(?m)^#+\s+(.*)$`)
	fence   = regexp.MustCompile("(?ms)^```.*?^```")
)

// slug is GitHub's anchor for a heading: lower case, punctuation but
// hyphens dropped, spaces as hyphens.
func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// anchors are the headings' slugs of a markdown file.
func anchors(text string) map[string]bool {
	out := map[string]bool{}
	for _, m := range heading.FindAllStringSubmatch(fence.ReplaceAllString(text, ""), -1) {
		out[slug(m[1])] = true
	}
	return out
}

// brokenLinks lists the links of the markdown file path that reach no file,
// or no heading of the file they name.
func brokenLinks(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := fence.ReplaceAllString(string(b), "")
	var bad []string
	for _, m := range link.FindAllStringSubmatch(text, -1) {
		target := m[1]
		if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
			continue
		}
		file, anchor, _ := strings.Cut(target, "#")
		dest := path
		if file != "" {
			dest = filepath.Join(filepath.Dir(path), file)
		}
		body, err := os.ReadFile(dest)
		if err != nil {
			bad = append(bad, target+": no such file")
			continue
		}
		if anchor != "" && !anchors(string(body))[anchor] {
			bad = append(bad, target+": no such heading")
		}
	}
	return bad
}

func TestLinks(t *testing.T) {
	pages, err := filepath.Glob("*.md")
	if err != nil || len(pages) == 0 {
		t.Fatalf("no pages in docs/ (%v)", err)
	}
	for _, p := range append(pages, "../README.md") {
		t.Run(filepath.Base(p), func(t *testing.T) {
			for _, b := range brokenLinks(t, p) {
				t.Errorf("%s: %s", p, b)
			}
		})
	}
}

// The checker itself finds a missing page and a missing heading, and
// passes a good link and a link inside a code block.
func TestBrokenLinksFound(t *testing.T) {
	dir := t.TempDir()
	page := filepath.Join(dir, "a.md")
	os.WriteFile(filepath.Join(dir, "b.md"), []byte("# B\n\n## The `runner eval` part\n"), 0o644)
	os.WriteFile(page, []byte("# A\n\n[ok](b.md#the-runner-eval-part) [self](#a) [gone](c.md) [wrong](b.md#nothing)\n"+
		"```\n[in code](nowhere.md)\n```\n"), 0o644)
	got := brokenLinks(t, page)
	want := []string{"c.md: no such file", "b.md#nothing: no such heading"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("broken links %q, want %q", got, want)
	}
}
