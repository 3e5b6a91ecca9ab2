package graphs

/*
#include <stdlib.h>
#include "deepsim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os/signal"
	"runtime"
	"syscall"
	"time"
	"unsafe"
)

// GroupSpec is one process's place in a data-parallel group and where the
// group meets.
type GroupSpec struct {
	Rank, WorldSize int
	// The TCP store that the ranks meet at. Rank 0 serves it when
	// ServeStore is set; otherwise an agent (torchrun's) does.
	MasterAddr string
	MasterPort int
	ServeStore bool
	// StorePrefix puts the group's keys under a prefix (torchrun's
	// /worker/attempt_N).
	StorePrefix string
	// StoreFile, when set, is a file store the ranks meet at instead: one
	// machine, nothing listening on the network for the rendezvous.
	StoreFile string
	// Interface is the network interface Gloo binds (GLOO_SOCKET_IFNAME);
	// "" means the loopback address for a loopback MasterAddr, else the
	// address this machine's hostname resolves to.
	Interface string
	// Timeout bounds the rendezvous and every collective: a rank that
	// died or hangs makes the others fail within it.
	Timeout time.Duration
}

// Group is a c10d process group (Gloo) that Models train in. Its
// collectives must be issued in the same order on every rank. Close
// releases it, after every Model that joined it is closed.
type Group struct {
	ptr         *C.ds_group
	rank, world int
}

// NewGroup joins the group that spec describes; it returns once every rank
// has joined, or fails within spec.Timeout naming the ranks that did not.
//
// Gloo writes to sockets from its own threads, where a SIGPIPE from a
// peer that died would kill the process: NewGroup ignores SIGPIPE, so that
// the write fails and the error reaches Go instead.
func NewGroup(spec GroupSpec) (*Group, error) {
	signal.Ignore(syscall.SIGPIPE)
	if spec.Timeout <= 0 {
		return nil, errors.New("join group: the timeout must be positive")
	}
	strs := []*C.char{C.CString(spec.MasterAddr), C.CString(spec.StorePrefix), C.CString(spec.StoreFile), C.CString(spec.Interface)}
	defer func() {
		for _, s := range strs {
			C.free(unsafe.Pointer(s))
		}
	}()
	serve := C.int32_t(0)
	if spec.ServeStore {
		serve = 1
	}
	c := C.ds_group_spec{
		rank:         C.int32_t(spec.Rank),
		world_size:   C.int32_t(spec.WorldSize),
		master_addr:  strs[0],
		master_port:  C.int32_t(spec.MasterPort),
		host_store:   serve,
		store_prefix: strs[1],
		store_file:   strs[2],
		ifname:       strs[3],
		timeout_ms:   C.int64_t(spec.Timeout.Milliseconds()),
	}
	var p *C.ds_group
	if err := errorFrom(fmt.Sprintf("rank %d of %d: join group", spec.Rank, spec.WorldSize), C.ds_group_new(&c, &p)); err != nil {
		return nil, err
	}
	return owned(&Group{ptr: p, rank: spec.Rank, world: spec.WorldSize}), nil
}

// Close leaves the group. It is safe to call more than once.
func (g *Group) Close() {
	release(g, &g.ptr, func(p *C.ds_group) { C.ds_group_free(p) })
}

// Rank is this process's rank, from 0.
func (g *Group) Rank() int { return g.rank }

// Size is the number of processes in the group.
func (g *Group) Size() int { return g.world }

var errGroupClosed = errors.New("graphs: group is closed")

// Broadcast returns rank 0's b on every rank; other ranks pass nil.
func (g *Group) Broadcast(b []byte) ([]byte, error) {
	if g.ptr == nil {
		return nil, errGroupClosed
	}
	var p *C.char
	if len(b) > 0 && g.rank == 0 {
		p = (*C.char)(unsafe.Pointer(&b[0]))
	}
	var out *C.char
	var n C.int64_t
	msg := C.ds_group_broadcast(g.ptr, p, C.int64_t(len(b)), &out, &n)
	runtime.KeepAlive(b)
	if err := errorFrom(g.op("broadcast"), msg); err != nil {
		return nil, err
	}
	return takeBytes(out, n), nil
}

// Same tells whether every rank passed the same v.
func (g *Group) Same(v int64) (bool, error) {
	if g.ptr == nil {
		return false, errGroupClosed
	}
	var same C.int32_t
	if err := errorFrom(g.op("compare"), C.ds_group_same(g.ptr, C.int64_t(v), &same)); err != nil {
		return false, err
	}
	return same != 0, nil
}

// AllReduced is the wall time the training steps spent in all-reduces so
// far (gradients and logged terms), and how many there were.
func (g *Group) AllReduced() (time.Duration, int64) {
	if g.ptr == nil {
		return 0, 0
	}
	var s C.double
	var n C.int64_t
	C.ds_group_stats(g.ptr, &s, &n)
	return time.Duration(float64(s) * float64(time.Second)), int64(n)
}

func (g *Group) op(what string) string {
	return fmt.Sprintf("rank %d of %d: %s", g.rank, g.world, what)
}

// Join makes m train in g: every rank takes rank 0's weights, optimizer
// and balancing state and its step, which Join returns; each TrainStep
// then all-reduces the gradients and the logged terms. m must be closed
// before g.
func (m *Model) Join(g *Group, step int64) (int64, error) {
	if m.ptr == nil {
		return 0, errClosed
	}
	if g.ptr == nil {
		return 0, errGroupClosed
	}
	var out C.int64_t
	msg := C.ds_model_join(m.ptr, g.ptr, C.int64_t(step), &out)
	runtime.KeepAlive(g)
	if err := errorFrom(g.op("join"), msg); err != nil {
		return 0, err
	}
	m.group = g
	return int64(out), nil
}
