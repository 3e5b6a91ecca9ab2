// Package launch reads a data-parallel process's place from torchrun's
// environment variables, and starts such processes on one machine.
package launch

import (
	"fmt"
	"strconv"
	"strings"
)

// Env is one process's place in a data-parallel run, as torchrun (or any
// launcher that sets its variables) gives it.
type Env struct {
	Rank, WorldSize, LocalRank int
	// MasterAddr:MasterPort is the TCP store the processes meet at.
	MasterAddr string
	MasterPort int
	// AgentStore: torchrun's agent serves the store, and the processes'
	// keys live under /worker/attempt_Attempt.
	AgentStore bool
	Attempt    int
	// Restart is how often torchrun has restarted the group
	// (TORCHELASTIC_RESTART_COUNT): above 0, a restarted process resumes.
	Restart int
	// StoreFile, set by Local, is a file store used instead of TCP.
	StoreFile string
	// Interface is the network interface for Gloo (GLOO_SOCKET_IFNAME).
	Interface string
}

// The variables FromEnv reads beyond torchrun's: Local's file store.
const storeFileVar = "DEEPSIM_STORE_FILE"

// FromEnv reads the variables through getenv. ok is false when WORLD_SIZE
// is unset or 1: then the process trains alone, as it does without a
// launcher.
func FromEnv(getenv func(string) string) (env Env, ok bool, err error) {
	ws := getenv("WORLD_SIZE")
	if ws == "" {
		return Env{}, false, nil
	}
	if env.WorldSize, err = atoi("WORLD_SIZE", ws); err != nil {
		return Env{}, false, err
	}
	if env.WorldSize < 1 {
		return Env{}, false, fmt.Errorf("WORLD_SIZE=%s: want 1 or more processes", ws)
	}
	if env.WorldSize == 1 {
		return Env{}, false, nil
	}
	r := getenv("RANK")
	if r == "" {
		return Env{}, false, fmt.Errorf("WORLD_SIZE=%s but RANK is not set", ws)
	}
	if env.Rank, err = atoi("RANK", r); err != nil {
		return Env{}, false, err
	}
	if env.Rank < 0 || env.Rank >= env.WorldSize {
		return Env{}, false, fmt.Errorf("RANK=%s is outside 0..%d (WORLD_SIZE=%s)", r, env.WorldSize-1, ws)
	}
	if lr := getenv("LOCAL_RANK"); lr != "" {
		if env.LocalRank, err = atoi("LOCAL_RANK", lr); err != nil {
			return Env{}, false, err
		}
	}
	env.Interface, _, _ = strings.Cut(getenv("GLOO_SOCKET_IFNAME"), ",")
	env.MasterAddr = getenv("MASTER_ADDR")
	if env.StoreFile = getenv(storeFileVar); env.StoreFile != "" {
		if env.MasterAddr == "" {
			env.MasterAddr = "127.0.0.1"
		}
		return env, true, nil
	}
	if env.MasterAddr == "" {
		return Env{}, false, fmt.Errorf("WORLD_SIZE=%s but MASTER_ADDR is not set", ws)
	}
	p := getenv("MASTER_PORT")
	if p == "" {
		return Env{}, false, fmt.Errorf("WORLD_SIZE=%s but MASTER_PORT is not set", ws)
	}
	if env.MasterPort, err = atoi("MASTER_PORT", p); err != nil {
		return Env{}, false, err
	}
	if env.MasterPort < 1 || env.MasterPort > 65535 {
		return Env{}, false, fmt.Errorf("MASTER_PORT=%s is not a port (1..65535)", p)
	}
	if a := getenv("TORCHELASTIC_RESTART_COUNT"); a != "" {
		if env.Restart, err = atoi("TORCHELASTIC_RESTART_COUNT", a); err != nil {
			return Env{}, false, err
		}
	}
	if getenv("TORCHELASTIC_USE_AGENT_STORE") == "True" {
		env.AgentStore, env.Attempt = true, env.Restart
	}
	return env, true, nil
}

// StorePrefix is where the processes' keys live in the store: torchrun's
// agent shares its store between attempts.
func (e Env) StorePrefix() string {
	if e.AgentStore {
		return fmt.Sprintf("/worker/attempt_%d", e.Attempt)
	}
	return ""
}

func atoi(name, v string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("%s=%q is not a whole number", name, v)
	}
	return n, nil
}
