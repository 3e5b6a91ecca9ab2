package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deepsim/deepsim/runner"
)

// hosts are network namespaces joined by a bridge, each a host with an
// address of its own, as far as sockets go: addresses exist only inside
// namespaces the test made.
type hosts struct {
	names, links, addrs []string
}

// ip runs ip(8) with args, failing the test with its output.
func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// makeHosts makes n namespaces on 10.213.N.0/24 and a bridge namespace
// joining them, and removes them all when the test ends, also on failure.
// Where namespaces cannot be made (no privilege) the test is skipped.
func makeHosts(t *testing.T, n int) hosts {
	t.Helper()
	id := strconv.Itoa(os.Getpid()%10000) + strconv.Itoa(n)
	bridge := "dsbr" + id
	if out, err := exec.Command("ip", "netns", "add", bridge).CombinedOutput(); err != nil {
		t.Skipf("cannot make network namespaces here (%v: %s): CI runs this test as root", err, strings.TrimSpace(string(out)))
	}
	var h hosts
	t.Cleanup(func() {
		for _, ns := range append(h.names, bridge) {
			exec.Command("ip", "netns", "del", ns).Run() // its links go with it
		}
	})
	ip(t, "-n", bridge, "link", "add", "br0", "type", "bridge")
	ip(t, "-n", bridge, "link", "set", "br0", "up")
	for i := range n {
		ns, link, peer := fmt.Sprintf("dsh%s-%d", id, i), fmt.Sprintf("ds%s-%d", id, i), fmt.Sprintf("db%s-%d", id, i)
		addr := fmt.Sprintf("10.213.%d.%d", n, i+1)
		ip(t, "netns", "add", ns)
		h.names = append(h.names, ns)
		ip(t, "link", "add", link, "netns", ns, "type", "veth", "peer", "name", peer, "netns", bridge)
		ip(t, "-n", ns, "addr", "add", addr+"/24", "dev", link)
		ip(t, "-n", ns, "link", "set", link, "up")
		ip(t, "-n", ns, "link", "set", "lo", "up")
		ip(t, "-n", bridge, "link", "set", peer, "master", "br0")
		ip(t, "-n", bridge, "link", "set", peer, "up")
		h.links, h.addrs = append(h.links, link), append(h.addrs, addr)
	}
	return h
}

// rank starts rank r of the hosts' group in its namespace, with torchrun's
// variables set by hand and Gloo on the host's link.
func (h hosts) rank(r int, master string, args []string, out *bytes.Buffer) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.names[r], binary}, args...)...)
	cmd.Env = append(os.Environ(), "WORLD_SIZE="+strconv.Itoa(len(h.names)), "RANK="+strconv.Itoa(r),
		"MASTER_ADDR="+master, "MASTER_PORT=29533", "GLOO_SOCKET_IFNAME="+h.links[r])
	cmd.Stdout, cmd.Stderr = out, out
	return cmd
}

// A group with one rank a host reproduces one process, in float64.
func TestGroupAcrossHosts(t *testing.T) {
	data := dpData(t)
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d hosts", n), func(t *testing.T) {
			h := makeHosts(t, n)
			const steps = 12
			short := []string{"--steps", strconv.Itoa(steps)}
			want := reference(t, runner.TaskAutoencoder, short...)
			run := filepath.Join(t.TempDir(), "run")
			args := dpArgs(data, run, runner.TaskAutoencoder, append(short, "--threads", "1")...)
			var cmds []*exec.Cmd
			var outs []*bytes.Buffer
			for r := range n {
				var out bytes.Buffer
				cmd := h.rank(r, h.addrs[0], args, &out)
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				cmds, outs = append(cmds, cmd), append(outs, &out)
			}
			for r, cmd := range cmds {
				if err := cmd.Wait(); err != nil {
					t.Fatalf("rank %d on %s: %v\n%s", r, h.addrs[r], err, outs[r])
				}
			}
			sameTraining(t, want, run, steps, 1e-4, 1e-5)
		})
	}
}

// A MASTER_ADDR that no host has fails within the timeout, naming it.
func TestGroupAcrossHostsWrongMaster(t *testing.T) {
	data := dpData(t)
	h := makeHosts(t, 2)
	run := filepath.Join(t.TempDir(), "run")
	args := dpArgs(data, run, runner.TaskAutoencoder, "--threads", "1", "--dist-timeout", "10s")
	wrong := "10.213.2.9"
	var out bytes.Buffer
	cmd := h.rank(1, wrong, args, &out)
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if err == nil || !strings.Contains(out.String(), wrong) {
		t.Fatalf("rank 1 with MASTER_ADDR=%s: %v, want an error naming it:\n%s", wrong, err, &out)
	}
	if took > time.Minute {
		t.Fatalf("it failed after %v, beyond the 10 s timeout", took)
	}
	t.Logf("failed after %v: %s", took.Round(time.Second), lastLine(out.String()))
}
