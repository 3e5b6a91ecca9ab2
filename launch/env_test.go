package launch

import (
	"strings"
	"testing"
)

func TestFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		ok      bool
		want    Env
		wantErr string
	}{
		{"no launcher", nil, false, Env{}, ""},
		{"one process", map[string]string{"WORLD_SIZE": "1", "RANK": "0"}, false, Env{}, ""},
		{"torchrun", map[string]string{"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"},
			true, Env{Rank: 1, WorldSize: 2, LocalRank: 1, MasterAddr: "10.0.0.1", MasterPort: 29500}, ""},
		{"torchrun's agent store", map[string]string{"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1",
			"TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_RESTART_COUNT": "3", "GLOO_SOCKET_IFNAME": "eth1,eth2"},
			true, Env{WorldSize: 2, MasterAddr: "h", MasterPort: 1, AgentStore: true, Attempt: 3, Restart: 3, Interface: "eth1"}, ""},
		{"file store", map[string]string{"WORLD_SIZE": "3", "RANK": "2", storeFileVar: "/tmp/s"},
			true, Env{Rank: 2, WorldSize: 3, MasterAddr: "127.0.0.1", StoreFile: "/tmp/s"}, ""},
		{"rank out of range", map[string]string{"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, false, Env{}, "RANK=2 is outside 0..1"},
		{"negative rank", map[string]string{"WORLD_SIZE": "2", "RANK": "-1", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, false, Env{}, "outside"},
		{"no rank", map[string]string{"WORLD_SIZE": "2"}, false, Env{}, "RANK is not set"},
		{"bad world size", map[string]string{"WORLD_SIZE": "two"}, false, Env{}, `WORLD_SIZE="two" is not a whole number`},
		{"zero world size", map[string]string{"WORLD_SIZE": "0"}, false, Env{}, "want 1 or more"},
		{"port too large", map[string]string{"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "70000"}, false, Env{}, "MASTER_PORT=70000 is not a port"},
		{"port not a number", map[string]string{"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "http"}, false, Env{}, "not a whole number"},
		{"no port", map[string]string{"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "h"}, false, Env{}, "MASTER_PORT is not set"},
		{"no address", map[string]string{"WORLD_SIZE": "2", "RANK": "0", "MASTER_PORT": "1"}, false, Env{}, "MASTER_ADDR is not set"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, ok, err := FromEnv(func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.ok || env != tc.want {
				t.Fatalf("got %+v, %v; want %+v, %v", env, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestStorePrefix(t *testing.T) {
	if p := (Env{AgentStore: true, Attempt: 2}).StorePrefix(); p != "/worker/attempt_2" {
		t.Fatalf("agent store prefix %q", p)
	}
	if p := (Env{}).StorePrefix(); p != "" {
		t.Fatalf("own store prefix %q", p)
	}
}

func TestLinesPrefixesWholeLines(t *testing.T) {
	var out strings.Builder
	l := &lines{w: &out, prefix: "[rank 1] "}
	for _, chunk := range []string{"first ha", "lf\nsecond\nthi", "rd"} {
		l.Write([]byte(chunk))
	}
	l.flush()
	want := "[rank 1] first half\n[rank 1] second\n[rank 1] third\n"
	if out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
}
