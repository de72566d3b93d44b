package checkpoint

import (
	"fmt"
	"math"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/torchpickle"
	"github.com/diad-project/diad/backend/torchrt"
)

// pickleFile is a PyTorch checkpoint (torch.save's zip or legacy format)
// read by torchpickle: the pickle is decoded at Open, each tensor's storage
// is read when the tensor is loaded.
type pickleFile struct {
	path    string
	file    *torchpickle.File
	tensors map[string]*torchpickle.Tensor
	entries map[string]Entry
}

// storageDTypes maps torch's storage classes to gotch's types.
var storageDTypes = map[string]gotch.DType{
	"FloatStorage": gotch.Float, "DoubleStorage": gotch.Double, "HalfStorage": gotch.Half,
	"BFloat16Storage": gotch.BFloat16, "LongStorage": gotch.Int64, "IntStorage": gotch.Int,
	"ShortStorage": gotch.Int16, "CharStorage": gotch.Int8, "ByteStorage": gotch.Uint8,
	"BoolStorage": gotch.Bool,
}

func openPickle(path string) (*pickleFile, error) {
	f, err := torchpickle.Open(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: not a readable PyTorch file: %w", path, err)
	}
	pf := &pickleFile{path: path, file: f, tensors: map[string]*torchpickle.Tensor{}, entries: map[string]Entry{}}
	// Lightning checkpoints nest the weights under "state_dict"; some
	// training scripts use "model". Plain state dicts are flat.
	dict, ok := f.Root.(*torchpickle.Dict)
	if !ok {
		f.Close()
		return nil, fmt.Errorf("checkpoint %s: expected a dict of tensors, got %T", path, f.Root)
	}
	for _, key := range []string{"state_dict", "model"} {
		if inner, ok := dict.Get(key); ok {
			if d, ok := inner.(*torchpickle.Dict); ok {
				dict = d
				break
			}
		}
	}
	for i, k := range dict.Keys {
		name, ok1 := k.(string)
		x, ok2 := dict.Values[i].(*torchpickle.Tensor)
		if !ok1 || !ok2 {
			continue
		}
		dtype, ok := storageDTypes[x.Storage.Type]
		if !ok {
			f.Close()
			return nil, fmt.Errorf("checkpoint %s: tensor %q: storage type %s is not supported", path, name, x.Storage.Type)
		}
		pf.tensors[name] = x
		pf.entries[name] = Entry{Name: name, DType: dtype.String(), Shape: append([]int64(nil), x.Size...)}
	}
	if len(pf.tensors) == 0 {
		f.Close()
		return nil, fmt.Errorf("checkpoint %s: no tensors found", path)
	}
	return pf, nil
}

func (p *pickleFile) Entries() []Entry            { return sortedEntries(p.entries) }
func (p *pickleFile) Metadata() map[string]string { return nil }
func (p *pickleFile) Close() error                { p.tensors = nil; return p.file.Close() }

func (p *pickleFile) Load(name string, device gotch.Device) (t *ts.Tensor, err error) {
	x, ok := p.tensors[name]
	if !ok {
		return nil, fmt.Errorf("checkpoint %s has no tensor %q", p.path, name)
	}
	size, stride := x.Size, x.Stride
	scalar := len(size) == 0
	if scalar { // a 0-dim tensor: taken as [1], then squeezed back
		size, stride = []int64{1}, []int64{1}
	}
	if !stridedWithin(size, stride, x.Offset, x.Storage.Numel) {
		return nil, fmt.Errorf("checkpoint %s: tensor %q: shape %v, strides %v at offset %d reach outside its storage of %d elements", p.path, name, x.Size, x.Stride, x.Offset, x.Storage.Numel)
	}
	dtype := storageDTypes[x.Storage.Type]
	empty := false
	for _, d := range size {
		empty = empty || d == 0
	}
	var data []byte
	if !empty {
		if data, err = x.Storage.Bytes(); err != nil {
			return nil, fmt.Errorf("checkpoint: %w", err)
		}
	}
	err = torchrt.Do(func() error {
		if empty {
			t = ts.MustZeros(size, gotch.Float, device)
			return nil
		}
		flat, err := ts.OfDataSize(data, []int64{x.Storage.Numel}, dtype)
		if err != nil {
			return err
		}
		v := flat.MustAsStrided(size, stride, []int64{x.Offset}, true).MustContiguous(true)
		if scalar {
			v = v.MustSqueeze(true)
		}
		t = toFloatOn(v, device)
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
