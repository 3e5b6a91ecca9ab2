package graphs

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/deepsim/deepsim/internal/torchfile"
	"github.com/deepsim/deepsim/internal/torchfile/torchfiletest"
)

// A full-shape AlexNet state dict with torchvision's key names, in the
// format of Python's torch.save(model.state_dict()): its conv5 features
// must match an independent computation in plain Go.
func TestAlexNetMatchesReference(t *testing.T) {
	tensors := torchfiletest.RandomAlexNet(7)
	// Python's layout, rewritten into the form libtorch reads, as an
	// import stores it.
	var py, b bytes.Buffer
	if err := torchfile.Write(&py, tensors); err != nil {
		t.Fatal(err)
	}
	if err := torchfile.Rewrite(bytes.NewReader(py.Bytes()), int64(py.Len()), &b); err != nil {
		t.Fatal(err)
	}
	comp, err := NewComparator(ComparatorSpec{Arch: "alexnet", Layer: "conv5", WeightsData: b.Bytes()})
	if err != nil {
		t.Fatal(err)
	}
	defer comp.Close()
	rng := rand.New(rand.NewPCG(1, 1))
	x := make([]float32, 3*224*224)
	for i := range x {
		x[i] = rng.Float32()*2 - 1
	}
	got, shape, err := comp.Features(x, 1, 224, 224)
	if err != nil {
		t.Fatal(err)
	}
	if shape != [4]int{1, 256, 6, 6} {
		t.Fatalf("conv5 shape %v", shape)
	}
	want := referenceConv5(tensors, x)
	var maxDiff, maxAbs float64
	for i := range want {
		maxDiff = math.Max(maxDiff, math.Abs(float64(got[i])-want[i]))
		maxAbs = math.Max(maxAbs, math.Abs(want[i]))
	}
	if maxAbs == 0 || maxDiff > 1e-5*math.Max(1, maxAbs) {
		t.Fatalf("conv5 differs from the reference by %g (largest value %g)", maxDiff, maxAbs)
	}
	t.Logf("largest difference %.2g, largest value %.3g", maxDiff, maxAbs)
}

// referenceConv5 computes AlexNet's features up to conv5 (after ReLU and
// max-pooling) in plain Go, in float64, from ImageNet-normalised input.
func referenceConv5(ts []torchfile.Tensor, x []float32) []float64 {
	mean := []float64{0.485, 0.456, 0.406}
	std := []float64{0.229, 0.224, 0.225}
	in := vol{c: 3, h: 224, w: 224, v: make([]float64, len(x))}
	for i, v := range x {
		c := i / (224 * 224)
		in.v[i] = ((float64(v)+1)/2 - mean[c]) / std[c]
	}
	w := map[string]torchfile.Tensor{}
	for _, t := range ts {
		w[t.Name] = t
	}
	layer := func(v vol, i string, k, stride, pad int) vol {
		return relu(conv(v, w["features."+i+".weight"], w["features."+i+".bias"], k, stride, pad))
	}
	h := maxpool(layer(in, "0", 11, 4, 2))
	h = maxpool(layer(h, "3", 5, 1, 2))
	h = layer(h, "6", 3, 1, 1)
	h = layer(h, "8", 3, 1, 1)
	return maxpool(layer(h, "10", 3, 1, 1)).v
}

type vol struct {
	c, h, w int
	v       []float64
}

func conv(in vol, wt, b torchfile.Tensor, k, stride, pad int) vol {
	o := wt.Shape[0]
	oh, ow := (in.h+2*pad-k)/stride+1, (in.w+2*pad-k)/stride+1
	out := vol{c: o, h: oh, w: ow, v: make([]float64, o*oh*ow)}
	for oc := 0; oc < o; oc++ {
		for y := 0; y < oh; y++ {
			for xx := 0; xx < ow; xx++ {
				s := float64(b.Data[oc])
				for ic := 0; ic < in.c; ic++ {
					for ky := 0; ky < k; ky++ {
						iy := y*stride + ky - pad
						if iy < 0 || iy >= in.h {
							continue
						}
						row := in.v[(ic*in.h+iy)*in.w:]
						wrow := wt.Data[((oc*in.c+ic)*k+ky)*k:]
						for kx := 0; kx < k; kx++ {
							ix := xx*stride + kx - pad
							if ix >= 0 && ix < in.w {
								s += row[ix] * float64(wrow[kx])
							}
						}
					}
				}
				out.v[(oc*oh+y)*ow+xx] = s
			}
		}
	}
	return out
}

func relu(v vol) vol {
	for i, x := range v.v {
		v.v[i] = math.Max(0, x)
	}
	return v
}

func maxpool(in vol) vol { // 3x3, stride 2
	oh, ow := (in.h-3)/2+1, (in.w-3)/2+1
	out := vol{c: in.c, h: oh, w: ow, v: make([]float64, in.c*oh*ow)}
	for c := 0; c < in.c; c++ {
		for y := 0; y < oh; y++ {
			for x := 0; x < ow; x++ {
				m := math.Inf(-1)
				for ky := 0; ky < 3; ky++ {
					for kx := 0; kx < 3; kx++ {
						m = math.Max(m, in.v[(c*in.h+2*y+ky)*in.w+2*x+kx])
					}
				}
				out.v[(c*oh+y)*ow+x] = m
			}
		}
	}
	return out
}
