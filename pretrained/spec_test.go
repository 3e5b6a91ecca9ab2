package pretrained

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Spec
		wantErr string
	}{
		{in: "alexnet:conv5", want: Spec{Name: "alexnet", Layer: "conv5"}},
		{in: "exemplar:conv3", want: Spec{Name: "exemplar", Layer: "conv3"}},
		{in: "alexnet-random:fc6", want: Spec{Name: "alexnet-random", Arch: "alexnet", Layer: "fc6", Random: true}},
		{in: "vgg16-random:conv3_3", want: Spec{Name: "vgg16-random", Arch: "vgg16", Layer: "conv3_3", Random: true}},
		{in: "../testdata/tiny_comparator.pt:features", want: Spec{Name: "../testdata/tiny_comparator.pt", Arch: "torchscript", Layer: "features", Script: "../testdata/tiny_comparator.pt"}},
		{in: "alexnet", want: Spec{Name: "alexnet"}},
		{in: "mobilenetv2:block_3_expand_relu+out_relu", want: Spec{Name: "mobilenetv2", Layer: "block_3_expand_relu+out_relu"}},
		{in: "alexnet:conv1++conv2", wantErr: "empty layer name"},
		{in: "resnet-random:conv1", wantErr: "unknown architecture \"resnet\""},
		{in: "missing/model.pt", wantErr: "no such file"},
		{in: "", wantErr: "empty"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("Parse = %+v, want %+v", got, tc.want)
			}
			if got.String() != tc.in {
				t.Fatalf("String = %q", got.String())
			}
		})
	}
}

// --as refuses the names that a --comparator spec could never mean.
func TestImportNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"alexnet", true}, {"my-net_2.1", true},
		{"", false}, {"exemplar", false}, {"alexnet-random", false}, {"torchscript", false},
		{"net.pt", false}, {"net.pth", false}, {".hidden", false}, {"a:b", false}, {"a+b", false},
		{"a/b", false}, {strings.Repeat("x", 65), false},
	} {
		if err := validName(tc.name); (err == nil) != tc.ok {
			t.Errorf("%q: err = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}
