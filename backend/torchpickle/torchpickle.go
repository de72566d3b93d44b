// Package torchpickle reads the files torch.save writes - the zip archive of
// PyTorch 1.6 and later and the older single-stream ("legacy") format -
// without running Python and without trusting the file: it implements the
// pickle opcodes data needs on a machine that never imports or calls
// anything, builds tensors only for torch's own rebuild functions, and checks
// every length and storage size against the bytes the file really has before
// allocating for it. (gotch's unpickler allocated whatever a storage claimed,
// and looped forever on an empty file.)
//
// Tensors come back as Tensor values that point into a Storage; Storage.Bytes
// reads a storage's raw little-endian bytes only when asked, so opening a
// multi-gigabyte checkpoint to list its tensors reads only its pickle.
package torchpickle

import (
	"archive/zip"
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"os"
	"path"
	"strings"
)

// Storage is one block of tensor data in a file.
type Storage struct {
	Key string
	// Type is torch's storage class name: FloatStorage, HalfStorage, ...
	Type string
	// Numel is the element count; ElemSize the bytes per element.
	Numel, ElemSize int64
	file            *File
}

// Tensor is a view of a storage, as torch._utils._rebuild_tensor_v2 makes it.
type Tensor struct {
	Storage      *Storage
	Offset       int64
	Size, Stride []int64
}

// elemSizes are the storage classes torchpickle reads, by name.
var elemSizes = map[string]int64{
	"FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2,
	"LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1,
	"ByteStorage": 1, "BoolStorage": 1,
}

var orderedDict = Global{Module: "collections", Name: "OrderedDict"}

// File is an opened checkpoint: its top-level value and its storages.
type File struct {
	// Root is the value torch.save was given (a *Dict for state dicts and
	// Lightning checkpoints).
	Root     any
	Storages map[string]*Storage

	path    string
	closer  io.Closer
	entries map[string]*zip.File // zip: storage key -> its record
	ra      io.ReaderAt          // legacy: the file and each storage's offset in it
	offsets map[string]int64
}

// maxPickle bounds the pickle part of a file: it holds names and shapes, not
// data (Stable Diffusion's is about 100 KB).
const maxPickle = 1 << 30

// Open reads the pickle of the checkpoint at path and indexes its storages.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %d bytes is not a PyTorch file", path, info.Size())
	}
	var out *File
	if string(magic[:]) == "PK\x03\x04" {
		out, err = openZip(f, info.Size())
	} else {
		out, err = openLegacy(f, info.Size())
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out.path, out.closer = path, f
	return out, nil
}

// Close releases the file.
func (f *File) Close() error {
	if f.closer == nil {
		return nil
	}
	err := f.closer.Close()
	f.closer = nil
	return err
}

// Bytes reads a storage's data: Numel*ElemSize bytes, little-endian.
func (s *Storage) Bytes() ([]byte, error) {
	f := s.file
	if f.closer == nil {
		return nil, fmt.Errorf("%s is closed", f.path)
	}
	n := s.Numel * s.ElemSize
	if zf, ok := f.entries[s.Key]; ok {
		// Read what is there, at most one byte more than wanted: a
		// compressed record's declared size is not trusted for allocation.
		b, err := readAll(zf, n+1)
		if err != nil {
			return nil, fmt.Errorf("%s: storage %s: %w", f.path, s.Key, err)
		}
		if int64(len(b)) != n {
			return nil, fmt.Errorf("%s: storage %s has %d bytes, its header says %d elements of %d", f.path, s.Key, len(b), s.Numel, s.ElemSize)
		}
		return b, nil
	}
	if off, ok := f.offsets[s.Key]; ok {
		b := make([]byte, n) // the size was checked against the file at Open
		if _, err := f.ra.ReadAt(b, off); err != nil {
			return nil, fmt.Errorf("%s: storage %s: %w", f.path, s.Key, err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("%s: storage %s has no data in the file", f.path, s.Key)
}

// storages builds the persistent-id loader both formats share:
// ('storage', class, key, location, numel[, view]).
func (f *File) storages() func(any) (any, error) {
	f.Storages = map[string]*Storage{}
	return func(pid any) (any, error) {
		t, ok := pid.(Tuple)
		if !ok || len(t) < 5 || len(t) > 6 || t[0] != "storage" {
			return nil, fmt.Errorf("persistent id %v is not a storage", pid)
		}
		class, ok1 := t[1].(Global)
		key, ok2 := t[2].(string)
		numel, ok3 := t[4].(int64)
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("persistent id %v is not a storage", pid)
		}
		if len(t) == 6 && t[5] != nil {
			return nil, fmt.Errorf("storage %s: views of storages (legacy format) are not supported", key)
		}
		size, known := elemSizes[class.Name]
		if !known || !strings.HasPrefix(class.Module, "torch") {
			return nil, fmt.Errorf("storage %s: type %s.%s is not supported", key, class.Module, class.Name)
		}
		if numel < 0 || numel > math.MaxInt64/8 {
			return nil, fmt.Errorf("storage %s: %d elements", key, numel)
		}
		if s, seen := f.Storages[key]; seen {
			if s.Type != class.Name || s.Numel != numel {
				return nil, fmt.Errorf("storage %s is both %d of %s and %d of %s", key, s.Numel, s.Type, numel, class.Name)
			}
			return s, nil
		}
		s := &Storage{Key: key, Type: class.Name, Numel: numel, ElemSize: size, file: f}
		f.Storages[key] = s
		return s, nil
	}
}

func newMachine(r io.Reader, size int64, persist func(any) (any, error)) *machine {
	return &machine{src: &source{r: bufio.NewReader(r), left: size}, memo: map[uint64]any{}, persist: persist}
}

func openZip(f *os.File, size int64) (*File, error) {
	zr, err := zip.NewReader(f, size)
	if err != nil {
		return nil, fmt.Errorf("not a readable PyTorch zip file: %w", err)
	}
	records := map[string]*zip.File{}
	var pkl *zip.File
	for _, zf := range zr.File {
		records[zf.Name] = zf
		dir, base := path.Split(zf.Name)
		if base == "data.pkl" && strings.Count(dir, "/") == 1 {
			if pkl != nil {
				return nil, fmt.Errorf("two data.pkl records (%s and %s)", pkl.Name, zf.Name)
			}
			pkl = zf
		}
	}
	if pkl == nil {
		return nil, errors.New("no data.pkl record: not a torch.save archive")
	}
	prefix := strings.TrimSuffix(pkl.Name, "data.pkl")
	if bo, ok := records[prefix+"byteorder"]; ok {
		b, err := readRecord(bo, 16)
		if err != nil {
			return nil, err
		}
		if string(b) != "little" {
			return nil, fmt.Errorf("byte order %q (only little-endian files are read)", b)
		}
	}
	raw, err := readRecord(pkl, maxPickle)
	if err != nil {
		return nil, err
	}
	out := &File{entries: map[string]*zip.File{}}
	m := newMachine(strings.NewReader(string(raw)), int64(len(raw)), out.storages())
	if out.Root, err = m.run(); err != nil {
		return nil, fmt.Errorf("data.pkl: %w", err)
	}
	for key, s := range out.Storages {
		zf, ok := records[prefix+"data/"+key]
		if !ok {
			return nil, fmt.Errorf("storage %s has no record %sdata/%s", key, prefix, key)
		}
		if want := s.Numel * s.ElemSize; zf.UncompressedSize64 != uint64(want) {
			return nil, fmt.Errorf("storage %s has %d bytes, its header says %d elements of %d", key, zf.UncompressedSize64, s.Numel, s.ElemSize)
		}
		out.entries[key] = zf
	}
	return out, nil
}

// readRecord reads a small zip record whole, at most limit bytes.
func readRecord(zf *zip.File, limit int64) ([]byte, error) {
	if zf.UncompressedSize64 > uint64(limit) {
		return nil, fmt.Errorf("%s: %d bytes, more than %d", zf.Name, zf.UncompressedSize64, limit)
	}
	b, err := readAll(zf, limit)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", zf.Name, err)
	}
	return b, nil
}

// readAll reads at most limit bytes of a zip record (a checksum error of a
// whole record shows at its close).
func readAll(zf *zip.File, limit int64) ([]byte, error) {
	rc, err := zf.Open()
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(rc, limit))
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	return b, err
}

// legacyMagic opens every legacy file (torch.serialization.MAGIC_NUMBER).
var legacyMagic, _ = new(big.Int).SetString("1950a86a20f9469cfc6c", 16)

// openLegacy reads the format torch.save wrote before 1.6: five pickles (the
// magic number, the protocol 1001, system information, the value, the list
// of storage keys), then each storage's element count and bytes.
func openLegacy(f *os.File, size int64) (*File, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	out := &File{ra: f, offsets: map[string]int64{}}
	src := &source{r: bufio.NewReader(f), left: size}
	next := func(what string, persist func(any) (any, error)) (any, error) {
		m := &machine{src: src, memo: map[uint64]any{}, persist: persist}
		v, err := m.run()
		if err != nil {
			return nil, fmt.Errorf("not a PyTorch file: %s: %w", what, err)
		}
		return v, nil
	}
	magic, err := next("magic number", nil)
	if err != nil {
		return nil, err
	}
	if b, ok := magic.(*big.Int); !ok || b.Cmp(legacyMagic) != 0 {
		return nil, fmt.Errorf("not a PyTorch file: magic number %v", magic)
	}
	if proto, err := next("protocol", nil); err != nil {
		return nil, err
	} else if proto != int64(1001) {
		return nil, fmt.Errorf("legacy protocol %v, want 1001", proto)
	}
	info, err := next("system information", nil)
	if err != nil {
		return nil, err
	}
	if d, ok := info.(*Dict); ok {
		if le, ok := d.Get("little_endian"); ok && le != true {
			return nil, errors.New("written on a big-endian machine (only little-endian files are read)")
		}
	}
	if out.Root, err = next("value", out.storages()); err != nil {
		return nil, err
	}
	keys, err := next("storage keys", nil)
	if err != nil {
		return nil, err
	}
	list, ok := keys.(*List)
	if !ok {
		return nil, fmt.Errorf("storage keys are a %T", keys)
	}
	pos := size - src.left
	for _, k := range list.Items {
		key, ok := k.(string)
		s := out.Storages[key]
		if !ok || s == nil {
			return nil, fmt.Errorf("storage key %v names no storage", k)
		}
		if size-pos < 8 {
			return nil, fmt.Errorf("storage %s: the file ends at its header", key)
		}
		var head [8]byte
		if _, err := f.ReadAt(head[:], pos); err != nil {
			return nil, fmt.Errorf("storage %s: %w", key, err)
		}
		var numel int64
		for i := 7; i >= 0; i-- {
			numel = numel<<8 | int64(head[i])
		}
		if numel != s.Numel {
			return nil, fmt.Errorf("storage %s has %d elements, its header says %d", key, numel, s.Numel)
		}
		pos += 8
		if n := s.Numel * s.ElemSize; n > size-pos {
			return nil, fmt.Errorf("storage %s: %d bytes claimed, %d left in the file", key, n, size-pos)
		}
		out.offsets[key] = pos
		pos += s.Numel * s.ElemSize
	}
	return out, nil
}

// call is REDUCE: torch's rebuild functions make Tensors, OrderedDict makes a
// Dict; anything else becomes an inert Object.
func call(fn, args any) (any, error) {
	g, ok := fn.(Global)
	if !ok {
		return nil, fmt.Errorf("call a %T", fn)
	}
	a, ok := args.(Tuple)
	if !ok {
		return nil, fmt.Errorf("arguments of %s.%s are a %T", g.Module, g.Name, args)
	}
	switch {
	case g.Module == "torch._utils" && (g.Name == "_rebuild_tensor_v2" || g.Name == "_rebuild_tensor"):
		return rebuildTensor(a)
	case g.Module == "torch._utils" && (g.Name == "_rebuild_parameter" || g.Name == "_rebuild_parameter_with_state"):
		if len(a) < 1 {
			return nil, fmt.Errorf("%s without arguments", g.Name)
		}
		return a[0], nil
	case g.Module == "torch._tensor" && g.Name == "_rebuild_from_type_v2":
		if len(a) < 3 {
			return nil, fmt.Errorf("%s with %d arguments", g.Name, len(a))
		}
		return call(a[0], a[2])
	case g == orderedDict:
		d := &Dict{}
		if len(a) == 1 {
			if l, ok := a[0].(*List); ok {
				for _, kv := range l.Items {
					p, ok := kv.(Tuple)
					if !ok || len(p) != 2 {
						return nil, errors.New("OrderedDict from something other than pairs")
					}
					d.set(p[0], p[1])
				}
			}
		}
		return d, nil
	}
	return &Object{Class: g, Args: a}, nil
}

// rebuildTensor is _rebuild_tensor_v2(storage, offset, size, stride, ...).
func rebuildTensor(a Tuple) (*Tensor, error) {
	if len(a) < 4 {
		return nil, fmt.Errorf("_rebuild_tensor with %d arguments", len(a))
	}
	s, ok := a[0].(*Storage)
	if !ok {
		return nil, fmt.Errorf("tensor storage is a %T", a[0])
	}
	off, ok := a[1].(int64)
	if !ok || off < 0 {
		return nil, fmt.Errorf("tensor offset %v", a[1])
	}
	size, err := ints(a[2])
	if err != nil {
		return nil, fmt.Errorf("tensor size: %w", err)
	}
	stride, err := ints(a[3])
	if err != nil {
		return nil, fmt.Errorf("tensor stride: %w", err)
	}
	if len(size) != len(stride) {
		return nil, fmt.Errorf("tensor size %v and stride %v differ in length", size, stride)
	}
	return &Tensor{Storage: s, Offset: off, Size: size, Stride: stride}, nil
}

func ints(v any) ([]int64, error) {
	t, ok := v.(Tuple)
	if !ok {
		return nil, fmt.Errorf("%T, not a tuple", v)
	}
	out := make([]int64, len(t))
	for i, x := range t {
		n, ok := x.(int64)
		if !ok || n < 0 {
			return nil, fmt.Errorf("%v", v)
		}
		out[i] = n
	}
	return out, nil
}
