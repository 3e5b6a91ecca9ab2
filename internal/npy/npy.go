// Package npy reads and writes float32 arrays in NumPy's .npy format, the
// form in which deepsim exchanges network features with Python.
package npy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
)

var magic = []byte("\x93NUMPY")

// Write writes data, C-ordered with the given shape, as little-endian
// float32 (NumPy's '<f4'), format version 1.0.
func Write(w io.Writer, shape []int, data []float32) error {
	n := 1
	for _, d := range shape {
		n *= d
	}
	if n != len(data) {
		return fmt.Errorf("npy: shape %v holds %d values, have %d", shape, n, len(data))
	}
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = strconv.Itoa(d)
	}
	tuple := strings.Join(dims, ", ")
	if len(shape) == 1 {
		tuple += ","
	}
	header := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", tuple)
	// The header, with its newline, pads the preamble to a multiple of 64.
	pad := 64 - (len(magic)+4+len(header)+1)%64
	header += strings.Repeat(" ", pad%64) + "\n"
	var b bytes.Buffer
	b.Write(magic)
	b.Write([]byte{1, 0})
	binary.Write(&b, binary.LittleEndian, uint16(len(header)))
	b.WriteString(header)
	if _, err := w.Write(b.Bytes()); err != nil {
		return err
	}
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	_, err := w.Write(raw)
	return err
}

var (
	descrRe   = regexp.MustCompile(`'descr':\s*'([^']*)'`)
	fortranRe = regexp.MustCompile(`'fortran_order':\s*(True|False)`)
	shapeRe   = regexp.MustCompile(`'shape':\s*\(([^)]*)\)`)
)

// Read reads a float32 array written in C order, refusing any other dtype
// or layout, and any file that would need more than maxValues values.
func Read(r io.Reader, maxValues int) (shape []int, data []float32, err error) {
	pre := make([]byte, 8)
	if _, err := io.ReadFull(r, pre); err != nil || !bytes.Equal(pre[:6], magic) {
		return nil, nil, errors.New("not a .npy file")
	}
	var hlen int
	switch pre[6] {
	case 1:
		var l uint16
		if err := binary.Read(r, binary.LittleEndian, &l); err != nil {
			return nil, nil, errors.New("npy: truncated header")
		}
		hlen = int(l)
	case 2, 3:
		var l uint32
		if err := binary.Read(r, binary.LittleEndian, &l); err != nil {
			return nil, nil, errors.New("npy: truncated header")
		}
		if l > 1<<20 {
			return nil, nil, fmt.Errorf("npy: a %d-byte header", l)
		}
		hlen = int(l)
	default:
		return nil, nil, fmt.Errorf("npy: format version %d is not supported", pre[6])
	}
	header := make([]byte, hlen)
	if _, err := io.ReadFull(r, header); err != nil {
		return nil, nil, errors.New("npy: truncated header")
	}
	h := string(header)
	if m := descrRe.FindStringSubmatch(h); m == nil || (m[1] != "<f4" && m[1] != "f4") {
		return nil, nil, fmt.Errorf("npy: dtype %q: want float32 ('<f4')", firstGroup(descrRe, h))
	}
	if m := fortranRe.FindStringSubmatch(h); m == nil || m[1] != "False" {
		return nil, nil, errors.New("npy: Fortran-ordered arrays are not supported: save with np.ascontiguousarray")
	}
	m := shapeRe.FindStringSubmatch(h)
	if m == nil {
		return nil, nil, errors.New("npy: no shape in the header")
	}
	n := 1
	for _, f := range strings.Split(m[1], ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		d, err := strconv.Atoi(f)
		if err != nil || d < 0 {
			return nil, nil, fmt.Errorf("npy: bad shape (%s)", m[1])
		}
		if d > 0 && n > maxValues/d {
			return nil, nil, fmt.Errorf("npy: shape (%s) holds more than %d values", m[1], maxValues)
		}
		n *= d
		shape = append(shape, d)
	}
	raw := make([]byte, 4*n)
	if _, err := io.ReadFull(r, raw); err != nil {
		return nil, nil, fmt.Errorf("npy: shape (%s) needs %d bytes of data: %w", m[1], 4*n, err)
	}
	data = make([]float32, n)
	for i := range data {
		data[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return shape, data, nil
}

func firstGroup(re *regexp.Regexp, s string) string {
	if m := re.FindStringSubmatch(s); m != nil {
		return m[1]
	}
	return "?"
}
