package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	for _, content := range []string{"first", "second"} {
		if err := WriteFile(path, []byte(content)); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		if string(got) != content {
			t.Fatalf("got %q", got)
		}
	}
	// A writer killed mid-write leaves only its temporary file behind.
	stale := filepath.Join(dir, ".f.tmp-123")
	os.WriteFile(stale, []byte("half"), 0o644)
	RemoveStale(dir)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatal("stale temporary file was not removed")
	}
	if got, _ := os.ReadFile(path); string(got) != "second" {
		t.Fatalf("the real file changed: %q", got)
	}
}
