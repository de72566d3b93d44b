// Package layers holds diad's neural-network building blocks on gotch tensors:
// a named parameter store (PyTorch state-dict names, so reference checkpoints
// load by name), and the layers the DiAD models are made of (convolution, linear,
// normalisation, attention, transformer blocks).
//
// Parameters are created through a Path. A Store built with NewSpecStore records
// names and shapes only and allocates nothing, so the paper-size model's
// parameter table (1.4 G parameters) can be listed and counted on any machine.
//
// Forward functions use gotch's Must* operations and free every intermediate
// tensor they create; the caller owns (and must drop) what they return.
// Operations panic on libtorch errors (a shape mismatch is a programming error);
// the model packages recover at their public entry points.
package layers

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/torchrt"
)

// Init says how a parameter starts.
type Init struct {
	kind  initKind
	bound float64
}

type initKind int

const (
	initZeros initKind = iota
	initOnes
	initUniform
)

// Zeros, Ones and Uniform(b) (U(-b, b)) are the initialisations the models use.
var (
	Zeros = Init{kind: initZeros}
	Ones  = Init{kind: initOnes}
)

// Uniform draws from U(-bound, bound).
func Uniform(bound float64) Init { return Init{kind: initUniform, bound: bound} }

// FanIn is PyTorch's default for conv/linear weights and biases
// (kaiming_uniform with a=sqrt(5) reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
func FanIn(fanIn int64) Init { return Uniform(1 / math.Sqrt(float64(fanIn))) }

// Param is one named tensor of a model.
type Param struct {
	Name  string
	Shape []int64
	// Buffer marks state that is saved but never trained (e.g. a fixed context).
	Buffer bool
	// Tensor is nil in a spec-only store.
	Tensor *ts.Tensor
}

// Numel is the number of elements.
func (p *Param) Numel() int64 {
	n := int64(1)
	for _, d := range p.Shape {
		n *= d
	}
	return n
}

// Store owns a model's parameters, in creation order.
type Store struct {
	device   gotch.Device
	specOnly bool
	params   []*Param
	byName   map[string]*Param
}

// NewStore creates a store that allocates parameters on device.
func NewStore(device gotch.Device) *Store {
	return &Store{device: device, byName: map[string]*Param{}}
}

// NewSpecStore creates a store that records names and shapes only.
func NewSpecStore() *Store {
	return &Store{device: gotch.CPU, specOnly: true, byName: map[string]*Param{}}
}

// Device is where the parameters live.
func (s *Store) Device() gotch.Device { return s.device }

// SpecOnly reports whether the store allocates nothing.
func (s *Store) SpecOnly() bool { return s.specOnly }

// Root is the empty path.
func (s *Store) Root() Path { return Path{store: s} }

// Params lists parameters in creation order.
func (s *Store) Params() []*Param { return s.params }

// Get returns the parameter called name, or nil.
func (s *Store) Get(name string) *Param { return s.byName[name] }

// Names lists parameter names, sorted.
func (s *Store) Names() []string {
	names := make([]string, 0, len(s.params))
	for _, p := range s.params {
		names = append(names, p.Name)
	}
	sort.Strings(names)
	return names
}

// Count sums the elements of parameters whose name starts with prefix
// (buffers excluded).
func (s *Store) Count(prefix string) int64 {
	var n int64
	for _, p := range s.params {
		if !p.Buffer && strings.HasPrefix(p.Name, prefix) {
			n += p.Numel()
		}
	}
	return n
}

// SetTrainable marks parameters trainable (requires_grad) where trainable(name)
// is true and frozen elsewhere. Buffers are never trainable.
func (s *Store) SetTrainable(trainable func(name string) bool) {
	for _, p := range s.params {
		if p.Tensor == nil {
			continue
		}
		torchrt.SetRequiresGrad_(p.Tensor, !p.Buffer && trainable(p.Name))
	}
}

// RequiresGrad reports whether a parameter whose name starts with prefix
// requires gradients (is trained).
func (s *Store) RequiresGrad(prefix string) bool {
	for _, p := range s.params {
		if p.Tensor != nil && !p.Buffer && strings.HasPrefix(p.Name, prefix) && p.Tensor.MustRequiresGrad() {
			return true
		}
	}
	return false
}

// Trainable lists the parameters that currently require gradients, in creation order.
func (s *Store) Trainable() []*Param {
	var out []*Param
	for _, p := range s.params {
		if p.Tensor != nil && p.Tensor.MustRequiresGrad() {
			out = append(out, p)
		}
	}
	return out
}

// Free releases every parameter tensor.
func (s *Store) Free() {
	for _, p := range s.params {
		if p.Tensor != nil {
			p.Tensor.MustDrop()
			p.Tensor = nil
		}
	}
}

// Path names parameters: Sub("input_blocks").Sub("0") gives "input_blocks.0.".
type Path struct {
	store  *Store
	prefix string
}

// Sub descends one level.
func (p Path) Sub(name string) Path {
	if strings.Contains(name, ".") {
		panic(fmt.Sprintf("layers: path element %q contains '.'", name))
	}
	return Path{store: p.store, prefix: p.prefix + name + "."}
}

// Subf descends one level named with a format (e.g. an index).
func (p Path) Subf(format string, args ...any) Path { return p.Sub(fmt.Sprintf(format, args...)) }

// Store is the path's store.
func (p Path) Store() *Store { return p.store }

// Name is the full name of a parameter called name under p.
func (p Path) Name(name string) string { return p.prefix + name }

// Param creates a trainable-by-default parameter (nil tensor in a spec store).
func (p Path) Param(name string, shape []int64, init Init) *ts.Tensor {
	return p.add(name, shape, init, false)
}

// Buffer creates a saved, never-trained tensor.
func (p Path) Buffer(name string, shape []int64, init Init) *ts.Tensor {
	return p.add(name, shape, init, true)
}

func (p Path) add(name string, shape []int64, init Init, buffer bool) *ts.Tensor {
	full := p.prefix + name
	s := p.store
	if _, dup := s.byName[full]; dup {
		panic("layers: duplicate parameter " + full)
	}
	prm := &Param{Name: full, Shape: append([]int64(nil), shape...), Buffer: buffer}
	if !s.specOnly {
		prm.Tensor = newInitialised(shape, init, s.device)
		if !buffer {
			torchrt.SetRequiresGrad_(prm.Tensor, true)
		}
	}
	s.params = append(s.params, prm)
	s.byName[full] = prm
	return prm.Tensor
}

func newInitialised(shape []int64, init Init, dev gotch.Device) *ts.Tensor {
	switch init.kind {
	case initOnes:
		return ts.MustOnes(shape, gotch.Float, dev)
	case initUniform:
		t := ts.MustEmpty(shape, gotch.Float, dev)
		torchrt.Uniform_(t, -init.bound, init.bound)
		return t
	default:
		return ts.MustZeros(shape, gotch.Float, dev)
	}
}
