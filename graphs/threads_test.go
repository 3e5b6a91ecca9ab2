package graphs

import (
	"runtime"
	"testing"
)

// A thread count set on one OS thread reaches every OS thread Go may run a
// later call on, including one that already ran libtorch at another count:
// libtorch keeps the count per thread, and Go moves calls between threads.
func TestThreadsReachEveryOSThread(t *testing.T) {
	defer SetThreads(0)
	got, next := make(chan int), make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		SetThreads(1)
		got <- Threads()
		<-next
		got <- Threads()
	}()
	if n := <-got; n != 1 {
		t.Fatalf("after SetThreads(1): %d threads", n)
	}
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		SetThreads(3)
		close(done)
	}()
	<-done
	next <- struct{}{}
	if n := <-got; n != 3 {
		t.Fatalf("a thread that ran at 1 thread still runs %d after SetThreads(3) on another", n)
	}
}
