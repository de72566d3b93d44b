package torchpickle

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/backend/internal/pytorch"
)

// The files torch.save writes, in both formats and with what real
// checkpoints hold beside their weights (optimizer state, hyperparameters as
// objects, paths, devices), read to the same bytes PyTorch has.
const writeScript = `
import argparse, collections, json, pathlib, sys, torch
torch.manual_seed(0)
base = torch.randn(4, 6)
sd = collections.OrderedDict()
sd["f32"] = torch.randn(4, 3)
sd["f16"] = torch.randn(5).half()
sd["bf16"] = torch.randn(2, 3).bfloat16()
sd["f64"] = torch.randn(3).double()
sd["i64"] = torch.arange(6).view(2, 3)
sd["i32"] = torch.arange(4, dtype=torch.int32)
sd["u8"] = torch.arange(3, dtype=torch.uint8)
sd["bool"] = torch.tensor([True, False, True])
sd["transposed"] = base.t()
sd["slice"] = base[1:3, 2:5]
sd["shared"] = base
sd["scalar"] = torch.tensor(7)
sd["empty"] = torch.zeros(0, 3)
sd["param"] = torch.nn.Parameter(torch.randn(2, 2))
ckpt = {"state_dict": sd, "epoch": 3, "global_step": 10, "lr": 1e-4,
        "hparams": argparse.Namespace(lr=1e-4, name="diad"), "path": pathlib.PurePosixPath("/x/y"),
        "device": torch.device("cpu"), "big": 2**70, "neg": -5, "bytes": b"\x00\x01",
        "nested": [1, (2.5, None), {"k": {1, 2}}],
        "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(2)}}, "param_groups": [{"lr": 0.1}]}]}
out = sys.argv[1]
torch.save(sd, out + "/plain.pth")
torch.save(ckpt, out + "/lightning.ckpt")
torch.save(ckpt, out + "/proto4.ckpt", pickle_protocol=4)
torch.save(sd, out + "/legacy.pth", _use_new_zipfile_serialization=False)
want = {}
for k, v in sd.items():
    v = v.detach()
    want[k] = {"shape": list(v.shape), "hex": v.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes().hex()}
print(json.dumps(want))
`

type wantTensor struct {
	Shape []int64 `json:"shape"`
	Hex   string  `json:"hex"`
}

// gather copies a tensor's elements, in row-major order, out of its storage.
func gather(t *testing.T, x *Tensor) []byte {
	t.Helper()
	data, err := x.Storage.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	es := x.Storage.ElemSize
	n := int64(1)
	for _, s := range x.Size {
		n *= s
	}
	out := make([]byte, 0, n*es)
	idx := make([]int64, len(x.Size))
	for k := int64(0); k < n; k++ {
		off := x.Offset
		for d := range idx {
			off += idx[d] * x.Stride[d]
		}
		out = append(out, data[off*es:(off+1)*es]...)
		for d := len(idx) - 1; d >= 0; d-- {
			if idx[d]++; idx[d] < x.Size[d] {
				break
			}
			idx[d] = 0
		}
	}
	return out
}

func stateDict(t *testing.T, f *File) *Dict {
	t.Helper()
	d, ok := f.Root.(*Dict)
	if !ok {
		t.Fatalf("root is a %T", f.Root)
	}
	if inner, ok := d.Get("state_dict"); ok {
		if d, ok = inner.(*Dict); !ok {
			t.Fatalf("state_dict is a %T", inner)
		}
	}
	return d
}

func TestReadsWhatTorchSaves(t *testing.T) {
	dir := t.TempDir()
	var want map[string]wantTensor
	if err := json.Unmarshal(pytorch.Run(t, writeScript, dir), &want); err != nil {
		t.Fatal(err)
	}
	if len(want) < 10 {
		t.Fatalf("the script described %d tensors", len(want))
	}
	for _, name := range []string{"plain.pth", "lightning.ckpt", "proto4.ckpt", "legacy.pth"} {
		t.Run(name, func(t *testing.T) {
			f, err := Open(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			sd := stateDict(t, f)
			if len(sd.Keys) != len(want) {
				t.Fatalf("%d entries, want %d", len(sd.Keys), len(want))
			}
			for i, k := range sd.Keys {
				x, ok := sd.Values[i].(*Tensor)
				if !ok {
					t.Fatalf("%v is a %T", k, sd.Values[i])
				}
				w := want[k.(string)]
				if len(x.Size) != len(w.Shape) {
					t.Fatalf("%s: shape %v, want %v", k, x.Size, w.Shape)
				}
				for d := range w.Shape {
					if x.Size[d] != w.Shape[d] {
						t.Fatalf("%s: shape %v, want %v", k, x.Size, w.Shape)
					}
				}
				if got := hex.EncodeToString(gather(t, x)); got != w.Hex {
					t.Fatalf("%s: bytes %s, want %s", k, got, w.Hex)
				}
			}
			if strings.HasSuffix(name, ".ckpt") {
				root := f.Root.(*Dict)
				if v, _ := root.Get("epoch"); v != int64(3) {
					t.Errorf("epoch %v", v)
				}
				if v, _ := root.Get("lr"); v != 1e-4 {
					t.Errorf("lr %v", v)
				}
				if v, _ := root.Get("neg"); v != int64(-5) {
					t.Errorf("neg %v", v)
				}
				if v, _ := root.Get("hparams"); v == nil {
					t.Error("hparams lost")
				}
			}
		})
	}
}

// Lengths and sizes a file claims are checked against the bytes it has
// before anything is allocated for them.
func TestClaimsAreCheckedBeforeAllocating(t *testing.T) {
	seed := filetest.Read(t, filepath.Join("testdata", "seeds", "legacy.pth"))
	// The first storage's element count, after the five pickles.
	f, err := Open(filepath.Join("testdata", "seeds", "legacy.pth"))
	if err != nil {
		t.Fatal(err)
	}
	var first int64 = -1
	for _, off := range f.offsets {
		if first < 0 || off < first {
			first = off
		}
	}
	f.Close()
	cases := map[string][]byte{}
	huge := append([]byte(nil), seed...)
	binary.LittleEndian.PutUint64(huge[first-8:], 1<<40)
	cases["storage of 2^40 elements"] = huge
	long := append([]byte(nil), seed[:40]...)
	long = append(long, 'X', 0xff, 0xff, 0xff, 0x7f) // BINUNICODE of 2 GiB
	cases["string of 2 GiB"] = long
	cases["empty"] = nil
	cases["tar"] = append([]byte("plain/data.pkl"), make([]byte, 1024)...)
	for name, data := range cases {
		path := filepath.Join(t.TempDir(), "x.pth")
		filetest.Write(t, path, data)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		f, err := Open(path)
		runtime.ReadMemStats(&after)
		if err == nil {
			f.Close()
			t.Errorf("%s: opened", name)
			continue
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
			t.Errorf("%s: refusing it allocated %d bytes", name, grew)
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("%s: the error does not name the file: %v", name, err)
		}
	}
}

// FuzzOpen: any bytes open with an error, or as storages whose bytes are
// what their headers say and tensors whose views stay inside them.
func FuzzOpen(f *testing.F) {
	seeds, err := filepath.Glob(filepath.Join("testdata", "seeds", "*"))
	if err != nil {
		f.Fatal(err)
	}
	if len(seeds) < 3 {
		f.Fatalf("seeds missing: %v", seeds)
	}
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("\x80\x02}q\x00."))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "x.pth")
		filetest.Write(t, path, data)
		file, err := Open(path)
		if err != nil {
			return
		}
		defer file.Close()
		for key, s := range file.Storages {
			b, err := s.Bytes()
			if err != nil {
				continue
			}
			if int64(len(b)) != s.Numel*s.ElemSize {
				t.Fatalf("storage %s: %d bytes for %d elements of %d", key, len(b), s.Numel, s.ElemSize)
			}
		}
		if !bytes.HasPrefix(data, []byte("PK")) && file.offsets == nil {
			t.Fatal("a legacy file without storage offsets")
		}
	})
}
