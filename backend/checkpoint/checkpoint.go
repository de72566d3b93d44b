// Package checkpoint reads and writes model weights: safetensors files (read
// through a memory map, written atomically) and PyTorch .ckpt/.pth/.pt pickles
// (Lightning checkpoints with a "state_dict", plain state dicts), and loads them
// into a layers.Store by name, refusing silently wrong loads: missing,
// unexpected and mis-shaped tensors are reported by name.
package checkpoint

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/torchrt"
)

// Entry describes one stored tensor.
type Entry struct {
	Name  string  `json:"name"`
	DType string  `json:"dtype"`
	Shape []int64 `json:"shape"`
}

// Numel is the element count.
func (e Entry) Numel() int64 {
	n := int64(1)
	for _, d := range e.Shape {
		n *= d
	}
	return n
}

// Reader gives access to a checkpoint's tensors by name.
type Reader interface {
	// Entries lists the stored tensors, sorted by name.
	Entries() []Entry
	// Metadata is the file's string metadata (safetensors __metadata__), may be nil.
	Metadata() map[string]string
	// Load materialises one tensor as float32 on device.
	Load(name string, device gotch.Device) (*ts.Tensor, error)
	// Close releases the file.
	Close() error
}

// Open reads a checkpoint, choosing the format by extension: .safetensors, or
// .ckpt/.pth/.pt/.bin for PyTorch pickles.
func Open(path string) (Reader, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".safetensors":
		return openSafetensors(path)
	case ".ckpt", ".pth", ".pt", ".bin":
		return openPickle(path)
	default:
		return nil, fmt.Errorf("checkpoint %s: unknown format (want .safetensors, .ckpt, .pth, .pt)", path)
	}
}

func sortedEntries(m map[string]Entry) []Entry {
	out := make([]Entry, 0, len(m))
	for _, e := range m {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func shapeString(s []int64) string { return fmt.Sprint(s) }

// SaveHalf is Save with every tensor stored as float16 (half the size; values
// rounded to 11 significant bits). Loading converts back to float32.
func SaveHalf(path string, tensors map[string]*ts.Tensor, metadata map[string]string) error {
	half := make(map[string]*ts.Tensor, len(tensors))
	defer func() {
		for _, t := range half {
			t.MustDrop()
		}
	}()
	err := torchrt.Do(func() error {
		for name, t := range tensors {
			half[name] = t.MustDetach(false).MustTotype(gotch.Half, true)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	return Save(path, half, metadata)
}
