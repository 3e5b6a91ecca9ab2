package torchfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// The values a state dict pickle builds.
type (
	global  struct{ module, name string }
	mark    struct{}
	tuple   []any
	dict    struct{ keys, vals []any }
	storage struct {
		typ, key, location string
		numel              int
	}
	tensorVal struct{ e Entry }
)

var errUnsupported = errors.New("unsupported pickle content")

// Limits on a state dict's pickle: a real one for any network holds a few
// thousand values; a hostile one must not grow memory without bound.
const (
	MaxPickle  = 64 << 20 // bytes of data.pkl
	maxPickled = 1 << 20  // values the pickle builds
)

// parseStateDict runs the subset of pickle that torch.save uses for a state
// dict (protocol 2) and returns its tensors in order.
func parseStateDict(code []byte) ([]Entry, error) {
	if len(code) > MaxPickle {
		return nil, fmt.Errorf("a %d-byte pickle, more than the %d a state dict needs", len(code), MaxPickle)
	}
	var stack []any
	memo := map[int]any{}
	pos, built := 0, 0
	need := func(n int) ([]byte, error) {
		if pos+n > len(code) {
			return nil, errors.New("truncated pickle")
		}
		b := code[pos : pos+n]
		pos += n
		return b, nil
	}
	// readUint reads an n-byte little-endian unsigned integer: pickle's memo
	// indices, string lengths and small ints all come this way.
	readUint := func(n int) (int, error) {
		b, err := need(n)
		if err != nil {
			return 0, err
		}
		v := 0
		for i := n - 1; i >= 0; i-- {
			v = v<<8 | int(b[i])
		}
		return v, nil
	}
	pop := func() (any, error) {
		if len(stack) == 0 {
			return nil, errors.New("pickle stack underflow")
		}
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		return v, nil
	}
	popMark := func() ([]any, error) {
		for i := len(stack) - 1; i >= 0; i-- {
			if _, ok := stack[i].(mark); ok {
				items := append([]any(nil), stack[i+1:]...)
				stack = stack[:i]
				return items, nil
			}
		}
		return nil, errors.New("pickle MARK not found")
	}
	line := func() (string, error) {
		i := bytes.IndexByte(code[pos:], '\n')
		if i < 0 {
			return "", errors.New("truncated pickle")
		}
		s := string(code[pos : pos+i])
		pos += i + 1
		return s, nil
	}
	for {
		op, err := need(1)
		if err != nil {
			return nil, err
		}
		if built++; built > maxPickled {
			return nil, fmt.Errorf("the pickle builds more than %d values: not a state dict", maxPickled)
		}
		switch op[0] {
		case 0x80: // PROTO
			if _, err := need(1); err != nil {
				return nil, err
			}
		case 'c': // GLOBAL
			mod, err := line()
			if err != nil {
				return nil, err
			}
			name, err := line()
			if err != nil {
				return nil, err
			}
			stack = append(stack, global{mod, name})
		case 'q', 'r', 'h', 'j': // BINPUT, LONG_BINPUT, BINGET, LONG_BINGET
			n := 1
			if op[0] == 'r' || op[0] == 'j' {
				n = 4
			}
			idx, err := readUint(n)
			if err != nil {
				return nil, err
			}
			if op[0] == 'q' || op[0] == 'r' {
				if len(stack) == 0 {
					return nil, errors.New("pickle stack underflow")
				}
				memo[idx] = stack[len(stack)-1]
			} else {
				v, ok := memo[idx]
				if !ok {
					return nil, fmt.Errorf("pickle memo %d unset", idx)
				}
				stack = append(stack, v)
			}
		case '(':
			stack = append(stack, mark{})
		case ')':
			stack = append(stack, tuple{})
		case '}':
			stack = append(stack, &dict{})
		case ']':
			stack = append(stack, tuple{}) // lists only appear in metadata
		case 'N':
			stack = append(stack, nil)
		case 0x88, 0x89: // NEWTRUE, NEWFALSE
			stack = append(stack, op[0] == 0x88)
		case 'X', 0x8c: // BINUNICODE, SHORT_BINUNICODE
			n := 1
			if op[0] == 'X' {
				n = 4
			}
			l, err := readUint(n)
			if err != nil {
				return nil, err
			}
			s, err := need(l)
			if err != nil {
				return nil, err
			}
			stack = append(stack, string(s))
		case 'K', 'M', 'J': // BININT1, BININT2, BININT
			n := map[byte]int{'K': 1, 'M': 2, 'J': 4}[op[0]]
			v, err := readUint(n)
			if err != nil {
				return nil, err
			}
			if n == 4 {
				v = int(int32(uint32(v))) // BININT is signed
			}
			stack = append(stack, v)
		case 0x8a: // LONG1
			b, err := need(1)
			if err != nil {
				return nil, err
			}
			raw, err := need(int(b[0]))
			if err != nil {
				return nil, err
			}
			var v int64
			for i := len(raw) - 1; i >= 0; i-- {
				v = v<<8 | int64(raw[i])
			}
			if len(raw) > 0 && len(raw) < 8 && raw[len(raw)-1]&0x80 != 0 {
				v -= 1 << (8 * len(raw))
			}
			stack = append(stack, int(v))
		case 'G': // BINFLOAT
			b, err := need(8)
			if err != nil {
				return nil, err
			}
			stack = append(stack, math.Float64frombits(binary.BigEndian.Uint64(b)))
		case 't':
			items, err := popMark()
			if err != nil {
				return nil, err
			}
			stack = append(stack, tuple(items))
		case 0x85, 0x86, 0x87: // TUPLE1..3
			n := int(op[0] - 0x84)
			if len(stack) < n {
				return nil, errors.New("pickle stack underflow")
			}
			items := append(tuple(nil), stack[len(stack)-n:]...)
			stack = append(stack[:len(stack)-n], items)
		case 'Q': // BINPERSID
			v, err := pop()
			if err != nil {
				return nil, err
			}
			st, err := toStorage(v)
			if err != nil {
				return nil, err
			}
			stack = append(stack, st)
		case 'R': // REDUCE
			args, err := pop()
			if err != nil {
				return nil, err
			}
			fn, err := pop()
			if err != nil {
				return nil, err
			}
			v, err := reduce(fn, args)
			if err != nil {
				return nil, err
			}
			stack = append(stack, v)
		case 's', 'u': // SETITEM, SETITEMS
			var items []any
			if op[0] == 's' {
				if len(stack) < 2 {
					return nil, errors.New("pickle stack underflow")
				}
				items = append(items, stack[len(stack)-2:]...)
				stack = stack[:len(stack)-2]
			} else if items, err = popMark(); err != nil {
				return nil, err
			}
			if len(stack) == 0 {
				return nil, errors.New("pickle stack underflow")
			}
			d, ok := stack[len(stack)-1].(*dict)
			if !ok || len(items)%2 != 0 {
				return nil, fmt.Errorf("%w: SETITEM on %T", errUnsupported, stack[len(stack)-1])
			}
			for i := 0; i < len(items); i += 2 {
				d.keys = append(d.keys, items[i])
				d.vals = append(d.vals, items[i+1])
			}
		case 'a', 'e': // APPEND, APPENDS: lists only appear in metadata
			if op[0] == 'a' {
				if _, err := pop(); err != nil {
					return nil, err
				}
			} else if _, err := popMark(); err != nil {
				return nil, err
			}
		case 'b': // BUILD: an OrderedDict's state (_metadata), not needed
			if _, err := pop(); err != nil {
				return nil, err
			}
		case '.': // STOP
			if len(stack) != 1 {
				return nil, fmt.Errorf("pickle ends with %d values", len(stack))
			}
			return entries(stack[0])
		default:
			return nil, fmt.Errorf("%w: opcode 0x%02x at byte %d", errUnsupported, op[0], pos-1)
		}
	}
}

func toStorage(v any) (storage, error) {
	t, ok := v.(tuple)
	if !ok || len(t) != 5 || t[0] != "storage" {
		return storage{}, fmt.Errorf("%w: persistent id %v", errUnsupported, v)
	}
	g, ok1 := t[1].(global)
	key, ok2 := t[2].(string)
	loc, ok3 := t[3].(string)
	n, ok4 := t[4].(int)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return storage{}, fmt.Errorf("%w: persistent id %v", errUnsupported, v)
	}
	return storage{typ: g.name, key: key, location: loc, numel: n}, nil
}

func ints(v any) ([]int, error) {
	t, ok := v.(tuple)
	if !ok {
		return nil, fmt.Errorf("%w: %v is not a tuple of ints", errUnsupported, v)
	}
	out := make([]int, len(t))
	for i, x := range t {
		if out[i], ok = x.(int); !ok {
			return nil, fmt.Errorf("%w: %v is not a tuple of ints", errUnsupported, v)
		}
	}
	return out, nil
}

func reduce(fn, args any) (any, error) {
	g, ok := fn.(global)
	a, okArgs := args.(tuple)
	if !ok || !okArgs {
		return nil, fmt.Errorf("%w: call of %v", errUnsupported, fn)
	}
	switch {
	case g.module == "collections" && g.name == "OrderedDict":
		return &dict{}, nil
	case g.module == "torch.jit._pickle" && g.name == "restore_type_tag" && len(a) == 2:
		return a[0], nil // libtorch's typed dict: (dict, "Dict[str, Tensor]")
	case g.module == "torch._utils" && g.name == "_rebuild_tensor_v2":
		if len(a) < 5 {
			return nil, fmt.Errorf("%w: _rebuild_tensor_v2 with %d arguments", errUnsupported, len(a))
		}
		st, ok := a[0].(storage)
		off, ok2 := a[1].(int)
		if !ok || !ok2 {
			return nil, fmt.Errorf("%w: _rebuild_tensor_v2 arguments", errUnsupported)
		}
		shape, err := ints(a[2])
		if err != nil {
			return nil, err
		}
		stride, err := ints(a[3])
		if err != nil {
			return nil, err
		}
		rg, _ := a[4].(bool)
		return tensorVal{Entry{StorageType: st.typ, Key: st.key, Location: st.location, Numel: st.numel,
			Offset: off, Shape: shape, Stride: stride, RequiresGrad: rg}}, nil
	}
	return nil, fmt.Errorf("%w: %s.%s (a state dict holds only tensors; save model.state_dict())", errUnsupported, g.module, g.name)
}

func entries(v any) ([]Entry, error) {
	d, ok := v.(*dict)
	if !ok {
		return nil, fmt.Errorf("%w: the file holds a %T, not a state dict", errUnsupported, v)
	}
	var out []Entry
	for i, k := range d.keys {
		name, ok := k.(string)
		t, ok2 := d.vals[i].(tensorVal)
		if !ok || !ok2 {
			return nil, fmt.Errorf("%w: entry %v is not a tensor", errUnsupported, k)
		}
		t.e.Name = name
		out = append(out, t.e)
	}
	return out, nil
}
