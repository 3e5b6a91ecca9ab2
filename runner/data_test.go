package runner

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deepsim/deepsim/internal/testimages"
)

// runner data shard writes every image into shards that list as the same
// images; runner data check counts them and names the bad one.
func TestDataShardAndCheck(t *testing.T) {
	src := t.TempDir()
	if _, err := testimages.WritePhotos(src, 5, 120, 90, 4); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(src, "broken.jpg"), []byte("not a JPEG"), 0o644)
	out := filepath.Join(t.TempDir(), "shards")
	pattern, err := WriteShards(context.Background(), ShardOptions{Data: []string{src}, Out: out, PerShard: 4, Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(out, "shard-{000000..000001}.tar"); pattern != want {
		t.Fatalf("pattern %q, want %q", pattern, want)
	}
	for _, name := range []string{"shard-000000.tar", "shard-000001.tar"} {
		st, err := os.Stat(filepath.Join(out, name))
		if err != nil || st.Mode().Perm() != 0o644 {
			t.Fatalf("%s: %v, mode %v", name, err, st.Mode())
		}
	}
	if _, err := WriteShards(context.Background(), ShardOptions{Data: []string{src}, Out: filepath.Join(src, "x"), PerShard: 4, Log: discardLog()}); err == nil {
		t.Fatal("shards written inside their source")
	}
	rep, err := CheckData(context.Background(), []string{pattern}, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Images != 6 || rep.Shards != 2 || len(rep.Bad) != 1 || !strings.HasSuffix(rep.Bad[0].Item, ".jpg") {
		t.Fatalf("report: %d images, %d shards, bad %v; want 6, 2 and the broken one", rep.Images, rep.Shards, rep.Bad)
	}
	if rep.Width != [5]int{120, 120, 120, 120, 120} || rep.Height[2] != 90 {
		t.Fatalf("sizes %v x %v; want the five good 120x90", rep.Width, rep.Height)
	}
	if s := rep.String(); !strings.Contains(s, "bad         1") || !strings.Contains(s, rep.Bad[0].Item) {
		t.Fatalf("printed report:\n%s", s)
	}
}
