package checkpoint

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/backend/torchrt"
)

// A checkpoint is outside input (users bring their own): any bytes open
// with an error or give tensors of the shapes the header states - never a
// crash, whatever the header's offsets claim.
func FuzzOpenSafetensors(f *testing.F) {
	dir := f.TempDir()
	for i, half := range []bool{false, true} {
		path := filepath.Join(dir, "seed.safetensors")
		err := torchrt.Do(func() error {
			a := ts.MustOfSlice([]float32{1, 2, 3, 4, 5, 6}).MustView([]int64{2, 3}, true)
			defer a.MustDrop()
			b := ts.MustOfSlice([]float32{7}).MustView([]int64{1}, true)
			defer b.MustDrop()
			tensors := map[string]*ts.Tensor{"w": a, "model.b": b}
			meta := map[string]string{"diad.config": "preset: tiny\n"}
			if half {
				return SaveHalf(path, tensors, meta)
			}
			return Save(path, tensors, meta)
		})
		if err != nil {
			f.Fatal(i, err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("\x08\x00\x00\x00\x00\x00\x00\x00{}      "))
	f.Add([]byte("\x40\x00\x00\x00\x00\x00\x00\x00{\"x\":{\"dtype\":\"F32\",\"shape\":[1000000],\"data_offsets\":[0,4]}}"))
	f.Add([]byte("short"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "x.safetensors")
		filetest.Write(t, path, data)
		r, err := Open(path)
		if err != nil {
			return
		}
		defer r.Close()
		loadEvery(t, r)
	})
}

// FuzzOpenPickle: PyTorch checkpoints (torch.save's zip and legacy formats)
// are user files too. Any bytes open with an error or as tensors that load
// with their declared shape (or with an error) - never a crash. The seeds
// are committed files written by torch.save (testdata/pickle).
func FuzzOpenPickle(f *testing.F) {
	seeds, err := filepath.Glob(filepath.Join("testdata", "pickle", "*"))
	if err != nil {
		f.Fatal(err)
	}
	if len(seeds) < 3 {
		f.Fatalf("pickle seeds missing: %v", seeds)
	}
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("definitely not a pickle"))
	f.Add([]byte("PK\x03\x04"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "x.pth")
		filetest.Write(t, path, data)
		var r Reader
		if err := torchrt.Do(func() (err error) {
			r, err = Open(path)
			return err
		}); err != nil {
			return
		}
		defer r.Close()
		loadEvery(t, r)
	})
}

// loadEvery loads each tensor a fuzzed file lists: an error is a fine
// answer to a corrupt file, a crash or a tensor unlike its header is not.
func loadEvery(t *testing.T, r Reader) {
	for _, e := range r.Entries() {
		if err := torchrt.Do(func() error {
			x, err := r.Load(e.Name, gotch.CPU)
			if err != nil {
				return err
			}
			defer x.MustDrop()
			if got := x.MustSize(); len(got) != len(e.Shape) || x.Numel() != uint(e.Numel()) {
				t.Fatalf("tensor %s: shape %v, header %v", e.Name, got, e.Shape)
			}
			return nil
		}); err != nil {
			continue // an error is an acceptable answer
		}
	}
}
