package checkpoint

import (
	"fmt"
	"io"
	"os"
	"syscall"
	"unsafe"

	st "github.com/nlpodyssey/safetensors"
	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/atomicfile"
)

// safetensorsFile is a memory-mapped safetensors file.
type safetensorsFile struct {
	path    string
	mapped  []byte
	file    st.SafeTensors
	entries map[string]Entry
	meta    map[string]string
}

func openSafetensors(path string) (*safetensorsFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open checkpoint: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open checkpoint %s: %w", path, err)
	}
	if info.Size() < 8 {
		return nil, fmt.Errorf("checkpoint %s: %d bytes is too short for safetensors", path, info.Size())
	}
	// A memory map: tensors are read from the page cache as they load, so a
	// 5 GB checkpoint does not need 5 GB of Go heap.
	mapped, err := syscall.Mmap(int(f.Fd()), 0, int(info.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap checkpoint %s: %w", path, err)
	}
	parsed, err := st.Deserialize(mapped)
	if err != nil {
		syscall.Munmap(mapped)
		return nil, fmt.Errorf("checkpoint %s: not a valid safetensors file: %w", path, err)
	}
	sf := &safetensorsFile{path: path, mapped: mapped, file: parsed, entries: map[string]Entry{}}
	for _, tv := range parsed.Tensors() {
		shape := make([]int64, len(tv.TensorView.Shape()))
		for i, d := range tv.TensorView.Shape() {
			shape[i] = int64(d)
		}
		sf.entries[tv.Name] = Entry{Name: tv.Name, DType: tv.TensorView.DType().String(), Shape: shape}
	}
	// Deserialize validated the header; read it once more for the metadata.
	if _, header, err := st.ReadMetadata(mapped); err == nil {
		sf.meta = header.Metadata()
	}
	return sf, nil
}

func (s *safetensorsFile) Entries() []Entry            { return sortedEntries(s.entries) }
func (s *safetensorsFile) Metadata() map[string]string { return s.meta }

func (s *safetensorsFile) Close() error {
	if s.mapped == nil {
		return nil
	}
	err := syscall.Munmap(s.mapped)
	s.mapped = nil
	return err
}

// gotchDType maps a safetensors dtype to gotch's.
func gotchDType(d st.DType) (gotch.DType, error) {
	switch d {
	case st.F32:
		return gotch.Float, nil
	case st.F16:
		return gotch.Half, nil
	case st.BF16:
		return gotch.BFloat16, nil
	case st.F64:
		return gotch.Double, nil
	case st.I64:
		return gotch.Int64, nil
	case st.I32:
		return gotch.Int, nil
	case st.U8:
		return gotch.Uint8, nil
	case st.I8:
		return gotch.Int8, nil
	case st.BOOL:
		return gotch.Bool, nil
	}
	return gotch.Float, fmt.Errorf("unsupported dtype %s", d)
}

func (s *safetensorsFile) Load(name string, device gotch.Device) (*ts.Tensor, error) {
	if s.mapped == nil {
		return nil, fmt.Errorf("checkpoint %s is closed", s.path)
	}
	tv, ok := s.file.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("checkpoint %s has no tensor %q", s.path, name)
	}
	dt, err := gotchDType(tv.DType())
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: tensor %q: %w", s.path, name, err)
	}
	shape := s.entries[name].Shape
	scalar := len(shape) == 0
	if scalar {
		shape = []int64{1} // gotch cannot build 0-d tensors from data: [1], squeezed below
	}
	t, err := ts.OfDataSize(tv.Data(), shape, dt)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: tensor %q: %w", s.path, name, err)
	}
	if scalar {
		if t, err = t.Squeeze(true); err != nil {
			return nil, fmt.Errorf("checkpoint %s: tensor %q: %w", s.path, name, err)
		}
	}
	return toFloatOn(t, device), nil
}

// toFloatOn converts t to float32 on device, freeing t.
func toFloatOn(t *ts.Tensor, device gotch.Device) *ts.Tensor {
	if t.DType() != gotch.Float {
		t = t.MustTotype(gotch.Float, true)
	}
	if device != gotch.CPU {
		t = t.MustTo(device, true)
	}
	return t
}

// tensorView adapts a gotch tensor to the safetensors writer, copying its
// bytes out only when the writer asks (one tensor at a time).
type tensorView struct {
	t     *ts.Tensor
	shape []uint64
	n     uint64
	dtype st.DType
}

func newTensorView(t *ts.Tensor) (*tensorView, error) {
	v := &tensorView{t: t, n: 4, dtype: st.F32}
	switch t.DType() {
	case gotch.Float:
	case gotch.Half:
		v.n, v.dtype = 2, st.F16
	default:
		return nil, fmt.Errorf("only float32 and float16 tensors are saved, got %v", t.DType())
	}
	size := t.MustSize()
	for _, d := range size {
		v.shape = append(v.shape, uint64(d))
		v.n *= uint64(d)
	}
	return v, nil
}

func (v *tensorView) DType() st.DType { return v.dtype }
func (v *tensorView) Shape() []uint64 { return v.shape }
func (v *tensorView) DataLen() uint64 { return v.n }
func (v *tensorView) Data() []byte    { return TensorBytes(v.t) }

// TensorBytes copies a tensor's contents (little-endian, C order) to Go memory.
func TensorBytes(t *ts.Tensor) []byte {
	c := t.MustDetach(false).MustTo(gotch.CPU, true).MustContiguous(true)
	defer c.MustDrop()
	n := int(c.Numel()) * int(c.DType().Size())
	out := make([]byte, n)
	if n > 0 {
		copy(out, unsafe.Slice((*byte)(c.MustDataPtr()), n))
	}
	return out
}

// Save writes named float32 tensors and string metadata to path as
// safetensors, atomically: a temporary file in the same directory is written,
// synced and renamed over path, so a crash never leaves a partial checkpoint.
func Save(path string, tensors map[string]*ts.Tensor, metadata map[string]string) error {
	views := make(map[string]*tensorView, len(tensors))
	for name, t := range tensors {
		v, err := newTensorView(t)
		if err != nil {
			return fmt.Errorf("save %s: tensor %q: %w", path, name, err)
		}
		views[name] = v
	}
	return atomicfile.Write(path, func(w io.Writer) error {
		return st.SerializeToWriter(views, metadata, w)
	})
}
