package checkpoint

import (
	"archive/tar"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/pickle"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/torchrt"
)

// pickleFile is a PyTorch checkpoint (torch.save zip or legacy format) decoded
// by gotch's unpickler. Tensors stay in their decoded storages until Load.
type pickleFile struct {
	path    string
	tensors map[string]*pickle.StorageTensor
	entries map[string]Entry
}

func openPickle(path string) (*pickleFile, error) {
	if err := checkLegacyArchive(path); err != nil {
		return nil, err
	}
	raw, err := pickle.LoadWithUnpickler(path, func(r io.Reader) pickle.Unpickler { return pickle.NewUnpickler(r) })
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: not a readable PyTorch file: %w", path, err)
	}
	pf := &pickleFile{path: path, tensors: map[string]*pickle.StorageTensor{}, entries: map[string]Entry{}}
	// Lightning checkpoints nest the weights under "state_dict"; some
	// training scripts use "model" or "state_dict_ema". Plain state dicts are flat.
	dict := raw
	for _, key := range []string{"state_dict", "model"} {
		if inner, ok := lookup(raw, key); ok && isMapping(inner) {
			dict = inner
			break
		}
	}
	if err := eachItem(dict, func(name string, v any) {
		if sx, ok := v.(*pickle.StorageTensor); ok {
			pf.tensors[name] = sx
			pf.entries[name] = Entry{Name: name, DType: sx.Source.DType().String(), Shape: append([]int64(nil), sx.Size...)}
		}
	}); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	if len(pf.tensors) == 0 {
		return nil, fmt.Errorf("checkpoint %s: no tensors found (top level is %T)", path, raw)
	}
	return pf, nil
}

func isMapping(v any) bool {
	switch v.(type) {
	case *pickle.Dict, *pickle.OrderedDict:
		return true
	}
	return false
}

func lookup(m any, key string) (any, bool) {
	var found any
	ok := false
	if err := eachItem(m, func(k string, v any) {
		if k == key {
			found, ok = v, true
		}
	}); err != nil {
		return nil, false // not a dict: it holds no key
	}
	return found, ok
}

// eachItem visits the string-keyed items of a pickled dict.
func eachItem(m any, f func(key string, v any)) error {
	switch d := m.(type) {
	case *pickle.Dict:
		for _, e := range *d {
			if k, ok := e.Key.(string); ok {
				f(k, e.Value)
			}
		}
	case *pickle.OrderedDict:
		for e := d.List.Front(); e != nil; e = e.Next() {
			item := e.Value.(*pickle.OrderedDictEntry)
			if k, ok := item.Key.(string); ok {
				f(k, item.Value)
			}
		}
	default:
		return fmt.Errorf("expected a dict of tensors, got %s", reflect.TypeOf(m))
	}
	return nil
}

func (p *pickleFile) Entries() []Entry            { return sortedEntries(p.entries) }
func (p *pickleFile) Metadata() map[string]string { return nil }
func (p *pickleFile) Close() error                { p.tensors = nil; return nil }

func (p *pickleFile) Load(name string, device gotch.Device) (t *ts.Tensor, err error) {
	sx, ok := p.tensors[name]
	if !ok {
		return nil, fmt.Errorf("checkpoint %s has no tensor %q", p.path, name)
	}
	err = torchrt.Do(func() error {
		data := sx.Source.GetData()
		size, stride := sx.Size, sx.Stride
		scalar := len(size) == 0
		if scalar { // a 0-dim tensor: taken as [1], then squeezed back
			size, stride = []int64{1}, []int64{1}
		}
		if n := int64(reflect.ValueOf(data).Len()); !stridedWithin(size, stride, sx.StorageOffset, n) {
			return fmt.Errorf("shape %v, strides %v at offset %d reach outside its storage of %d elements", sx.Size, sx.Stride, sx.StorageOffset, n)
		}
		dtype := sx.Source.DType()
		x := ts.MustOfSlice(data, ts.WithDType(dtype)).MustAsStrided(size, stride, []int64{sx.StorageOffset}, true).MustContiguous(true)
		if scalar {
			x = x.MustSqueeze(true)
		}
		t = toFloatOn(x, device)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: tensor %q: %w", p.path, name, err)
	}
	return t, nil
}

// stridedWithin reports whether a view of size and stride at offset stays
// inside a storage of n elements (a hostile file can claim any of them).
func stridedWithin(size, stride []int64, offset, n int64) bool {
	if len(size) != len(stride) || offset < 0 {
		return false
	}
	last := offset
	for i, s := range size {
		if s < 0 || stride[i] < 0 {
			return false
		}
		if s == 0 {
			return offset <= n
		}
		if s-1 > 0 && stride[i] > (math.MaxInt64-last)/(s-1) {
			return false
		}
		last += (s - 1) * stride[i]
	}
	return last < n
}

// checkLegacyArchive refuses what gotch's legacy loader cannot leave: an
// empty file (or an empty tar archive) makes it loop forever - its tar loop
// breaks out of a switch, not the loop, on io.EOF - and a tar archive with
// entries panics as not implemented.
func checkLegacyArchive(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", path, err)
	}
	defer f.Close()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err == nil && string(magic[:]) == "PK\x03\x04" {
		return nil // torch.save's zip format
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("checkpoint %s: %w", path, err)
	}
	switch _, err := tar.NewReader(f).Next(); err {
	case io.EOF:
		return fmt.Errorf("checkpoint %s: not a readable PyTorch file: empty", path)
	case nil:
		return fmt.Errorf("checkpoint %s: legacy tar checkpoints are not supported (save it with torch.save's default format)", path)
	}
	return nil
}
