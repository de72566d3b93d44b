package checkpoint

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	st "github.com/nlpodyssey/safetensors"
	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/backend/internal/pytorch"
	"github.com/diad-project/diad/backend/layers"
	"github.com/diad-project/diad/backend/torchrt"
)

func TestSafetensorsRoundTripIsExact(t *testing.T) {
	defer torchrt.Pin()()
	torchrt.ManualSeed(3)
	in := map[string]*ts.Tensor{
		"a.weight": ts.MustRandn([]int64{3, 4, 2}, gotch.Float, gotch.CPU),
		"b.bias":   ts.MustRandn([]int64{7}, gotch.Float, gotch.CPU),
		"one":      ts.MustOnes([]int64{1}, gotch.Float, gotch.CPU),
		// a non-contiguous view
		"c.t": ts.MustRandn([]int64{5, 6}, gotch.Float, gotch.CPU).MustTranspose(0, 1, true),
	}
	defer func() {
		for _, x := range in {
			x.MustDrop()
		}
	}()
	path := filepath.Join(t.TempDir(), "x.safetensors")
	if err := Save(path, in, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Metadata()["k"] != "v" {
		t.Fatalf("metadata %v", r.Metadata())
	}
	if len(r.Entries()) != len(in) {
		t.Fatalf("entries %v", r.Entries())
	}
	for name, want := range in {
		got, err := r.Load(name, gotch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		g, w := got.Float64Values(), want.Float64Values()
		if len(g) != len(w) {
			t.Fatalf("%s: %d values, want %d", name, len(g), len(w))
		}
		for i := range g {
			if g[i] != w[i] {
				t.Fatalf("%s[%d] = %v, want %v", name, i, g[i], w[i])
			}
		}
		got.MustDrop()
	}
	if _, err := r.Load("nope", gotch.CPU); err == nil {
		t.Fatal("missing tensor loaded")
	}
	// No temporary files are left behind.
	files, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 {
		t.Fatalf("directory holds %d files", len(files))
	}
}

// f16 is a tensor view over raw half-precision bytes, as other tools write them.
type f16 struct {
	shape []uint64
	data  []byte
}

func (v f16) DType() st.DType { return st.F16 }
func (v f16) Shape() []uint64 { return v.shape }
func (v f16) Data() []byte    { return v.data }
func (v f16) DataLen() uint64 { return uint64(len(v.data)) }

func TestSafetensorsHalfPrecisionIsConverted(t *testing.T) {
	defer torchrt.Pin()()
	// 1.0, -2.0, 0.5 in IEEE half precision.
	data := make([]byte, 6)
	for i, h := range []uint16{0x3c00, 0xc000, 0x3800} {
		binary.LittleEndian.PutUint16(data[2*i:], h)
	}
	b, err := st.Serialize(map[string]f16{"h": {shape: []uint64{3}, data: data}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "h.safetensors")
	filetest.Write(t, path, b)
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	x, err := r.Load("h", gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer x.MustDrop()
	if x.DType() != gotch.Float {
		t.Fatalf("dtype %v", x.DType())
	}
	got := x.Float64Values()
	if got[0] != 1 || got[1] != -2 || got[2] != 0.5 {
		t.Fatalf("values %v", got)
	}
}

func TestCorruptFilesAreRejected(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string][]byte{
		"short.safetensors": []byte("abc"),
		"junk.safetensors":  append([]byte{200, 0, 0, 0, 0, 0, 0, 0}, []byte("{not json")...),
		"junk.pth":          []byte("definitely not a pickle"),
	} {
		p := filepath.Join(dir, name)
		filetest.Write(t, p, content)
		if r, err := Open(p); err == nil {
			r.Close()
			t.Errorf("%s opened", name)
		} else if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error does not name the file: %v", name, err)
		}
	}
	if _, err := Open(filepath.Join(dir, "x.onnx")); err == nil {
		t.Error("unknown extension accepted")
	}
	if _, err := Open(filepath.Join(dir, "absent.safetensors")); err == nil {
		t.Error("absent file opened")
	}
}

func TestPyTorchPicklesLoad(t *testing.T) {
	defer torchrt.Pin()()
	dir := t.TempDir()
	script := `
import json, sys, torch
torch.manual_seed(0)
sd = {"layer.weight": torch.randn(4, 3), "layer.bias": torch.randn(4).half(),
      "t": torch.randn(3, 5).t(), "bn.num_batches_tracked": torch.tensor(7)}
torch.save(sd, sys.argv[1] + "/plain.pth")
torch.save({"state_dict": sd, "epoch": 3, "global_step": 10}, sys.argv[1] + "/lightning.ckpt")
torch.save(sd, sys.argv[1] + "/legacy.pth", _use_new_zipfile_serialization=False)
print(json.dumps({k: v.float().flatten().tolist() for k, v in sd.items()}))
`
	var want map[string][]float64
	if err := json.Unmarshal(pytorch.Run(t, script, dir), &want); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{"plain.pth", "lightning.ckpt", "legacy.pth"} {
		r, err := Open(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Entries()) != len(want) {
			t.Fatalf("%s: entries %v", file, r.Entries())
		}
		for name, w := range want {
			x, err := r.Load(name, gotch.CPU)
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			g := x.Float64Values()
			x.MustDrop()
			for i := range w {
				if math.Abs(g[i]-w[i]) > 1e-6*math.Max(1, math.Abs(w[i])) {
					t.Fatalf("%s %s: %v, want %v", file, name, g, w)
				}
			}
		}
		r.Close()
	}
}

func TestLoadIntoRefusesWrongFiles(t *testing.T) {
	defer torchrt.Pin()()
	store := layers.NewStore(gotch.CPU)
	defer store.Free()
	root := store.Root()
	root.Sub("a").Param("weight", []int64{2, 2}, layers.Ones)
	root.Sub("b").Param("weight", []int64{3}, layers.Ones)
	dir := t.TempDir()
	save := func(name string, tensors map[string][]int64) string {
		m := map[string]*ts.Tensor{}
		for k, shape := range tensors {
			m[k] = ts.MustZeros(shape, gotch.Float, gotch.CPU)
		}
		p := filepath.Join(dir, name)
		if err := Save(p, m, nil); err != nil {
			t.Fatal(err)
		}
		return p
	}
	load := func(p string, o LoadOptions) (Report, error) {
		r, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		return LoadInto(store, r, o)
	}
	bad := save("bad.safetensors", map[string][]int64{"a.weight": {2, 3}, "b.weight": {3}})
	if _, err := load(bad, LoadOptions{}); !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), "a.weight") {
		t.Fatalf("mis-shaped: %v", err)
	}
	// Nothing was changed by the refused load.
	if v := store.Get("b.weight").Tensor.Float64Values(); v[0] != 1 {
		t.Fatal("refused load modified parameters")
	}
	extra := save("extra.safetensors", map[string][]int64{"a.weight": {2, 2}, "b.weight": {3}, "clip.x": {1}})
	if _, err := load(extra, LoadOptions{}); err == nil || !strings.Contains(err.Error(), "clip.x") {
		t.Fatalf("unexpected: %v", err)
	}
	rep, err := load(extra, LoadOptions{IgnoreUnexpected: true})
	if err != nil || len(rep.Loaded) != 2 || store.Get("b.weight").Tensor.Float64Values()[0] != 0 {
		t.Fatalf("ignore-unexpected load: %+v %v", rep, err)
	}
	partial := save("partial.safetensors", map[string][]int64{"a.weight": {2, 2}})
	if _, err := load(partial, LoadOptions{}); err == nil || !strings.Contains(err.Error(), "b.weight") {
		t.Fatalf("missing: %v", err)
	}
	if rep, err := load(partial, LoadOptions{Prefixes: []string{"a."}}); err != nil || len(rep.Loaded) != 1 {
		t.Fatalf("prefix load: %+v %v", rep, err)
	}
}
