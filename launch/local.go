package launch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// afterFailure is how long the other processes have to stop by themselves
// once one has failed: they see a dead peer at once and name it within
// seconds. Then they are stopped.
const afterFailure = 20 * time.Second

// ExitError says which process of a Local run failed first, and how.
type ExitError struct {
	Rank int
	Err  error
}

func (e *ExitError) Error() string { return fmt.Sprintf("rank %d: %v", e.Rank, e.Err) }
func (e *ExitError) Unwrap() error { return e.Err }

// Local runs n processes of exe with args on this machine, as ranks 0..n-1
// of one group that meets through a file store in a private temporary
// folder and talks over the loopback address: nothing listens on other
// interfaces. Rank 0 writes to stderr as it is; the others' lines are
// prefixed with their rank. When ctx is cancelled each process gets one
// SIGINT (the processes run in their own process group, so a terminal's
// Ctrl-C reaches them only this way), and they stop together. Local
// returns context.Canceled when that is how they ended, an *ExitError
// when one failed.
func Local(ctx context.Context, n int, exe string, args []string, stderr io.Writer) error {
	if n < 2 {
		return fmt.Errorf("launch: %d processes; want 2 or more", n)
	}
	dir, err := os.MkdirTemp("", "deepsim-group-")
	if err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	defer os.RemoveAll(dir)
	env := append(os.Environ(),
		"WORLD_SIZE="+strconv.Itoa(n), "LOCAL_WORLD_SIZE="+strconv.Itoa(n),
		"MASTER_ADDR=127.0.0.1", storeFileVar+"="+filepath.Join(dir, "store"))
	type exit struct {
		rank int
		err  error
	}
	exits := make(chan exit, n)
	procs := make([]*os.Process, 0, n)
	signalAll := func(sig os.Signal) {
		for _, p := range procs {
			p.Signal(sig) // a process that has exited: nothing to do
		}
	}
	var outs []*lines
	defer func() {
		for _, o := range outs {
			o.flush()
		}
	}()
	for r := range n {
		cmd := exec.Command(exe, args...)
		cmd.Env = append(env[:len(env):len(env)], "RANK="+strconv.Itoa(r), "LOCAL_RANK="+strconv.Itoa(r))
		cmd.Stdout, cmd.Stderr = stderr, stderr
		if r > 0 {
			o := &lines{w: stderr, prefix: fmt.Sprintf("[rank %d] ", r)}
			outs = append(outs, o)
			cmd.Stdout, cmd.Stderr = o, o
		}
		// Own process group; SIGTERM if the launcher dies.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
		if err := cmd.Start(); err != nil {
			signalAll(syscall.SIGKILL)
			for range procs {
				<-exits
			}
			return fmt.Errorf("launch rank %d: %w", r, err)
		}
		procs = append(procs, cmd.Process)
		go func() { exits <- exit{r, cmd.Wait()} }()
	}

	var first *ExitError
	interrupted := false
	done := ctx.Done()
	var stopping, killing <-chan time.Time
	for left := n; left > 0; {
		select {
		case <-done:
			done, interrupted = nil, true
			signalAll(os.Interrupt)
		case e := <-exits:
			left--
			if e.err == nil || first != nil {
				continue
			}
			if interrupted && exitCode(e.err) == 130 {
				continue
			}
			first = &ExitError{Rank: e.rank, Err: e.err}
			stopping = time.After(afterFailure)
		case <-stopping:
			signalAll(syscall.SIGTERM)
			killing = time.After(5 * time.Second)
		case <-killing:
			signalAll(syscall.SIGKILL)
		}
	}
	if first != nil {
		return first
	}
	if interrupted {
		return context.Canceled
	}
	return nil
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// lines writes whole lines to w, each after prefix; several processes'
// output then interleaves by line, not mid-line.
type lines struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		if _, err := io.WriteString(l.w, l.prefix+string(l.buf[:i+1])); err != nil {
			return len(p), err
		}
		l.buf = l.buf[i+1:]
	}
}

func (l *lines) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		io.WriteString(l.w, l.prefix+string(l.buf)+"\n")
		l.buf = nil
	}
}
