package runner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// LockFile is the file in a run folder whose flock marks the run's one
// writer.
const LockFile = ".lock"

// ErrRunInUse is returned when another process is writing the run folder.
var ErrRunInUse = errors.New("in use by another runner")

// lockRun takes the run folder's exclusive lock, so that the folder has
// one writer. It fails at once when another process holds it. The lock
// goes with the process however it ends, kill -9 included.
func lockRun(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s is %w (training, resuming or ablating it): wait for it, or choose another run folder", dir, ErrRunInUse)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}
