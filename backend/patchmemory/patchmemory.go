// Package patchmemory is a weight-free anomaly map that holds on photographs:
// a memory of the training images' small patches and, for a new image, each
// location's distance to the nearest patch in memory. A patch is the raw
// colour of a small window taken at several scales (so one location sees a
// few pixels, a small neighbourhood and a wider one), reduced to a few
// principal components learnt on the training patches (partly whitened, so
// that faint structure counts beside brightness and hue). The memory keeps a
// coreset of the training patches (each the farthest from those kept, per
// category), so that rare normal patches are remembered. Nothing is trained
// by gradient and nothing is downloaded: the memory is built in seconds from
// the normal images, and an image of a known category is compared with that
// category's patches only, in the spirit of PatchCore (Roth et al. 2022) with the
// ImageNet backbone replaced by the image itself. It complements DiAD's
// reconstruction: the distance needs no reconstruction and sees a stain or a
// crack that a good reconstruction copied.
package patchmemory

import (
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/layers"
)

// Prefix names the memory's buffers in a model's state dict.
const Prefix = "patch_memory."

// Config is the memory's shape. Size 0 means no memory.
type Config struct {
	// Stride is the image side divided by the map's side: one memory
	// location per Stride x Stride pixels.
	Stride int64 `yaml:"stride,omitempty"`
	// Scales are the average-pooling factors the image is seen at; a patch
	// is the concatenation of its windows at every scale.
	Scales []int64 `yaml:"scales,omitempty"`
	// Patch is the window's side in pixels (odd) at each scale.
	Patch int64 `yaml:"patch,omitempty"`
	// Dims is how many principal components of the patches are kept.
	Dims int64 `yaml:"dims,omitempty"`
	// Size is how many training patches the memory holds.
	Size int64 `yaml:"size,omitempty"`
	// QueryChunk and BankChunk tile the nearest-neighbour search so that one
	// tile of distances stays in cache (QueryChunk x BankChunk floats).
	QueryChunk int64 `yaml:"query_chunk,omitempty"`
	BankChunk  int64 `yaml:"bank_chunk,omitempty"`
	// Coreset chooses the memory greedily, each patch the farthest from
	// those already chosen (PatchCore's coreset), so that rare normal
	// patches are kept; false draws it at random.
	Coreset bool `yaml:"coreset,omitempty"`
	// Whiten, in [0, 1], evens out the principal components' weight in
	// the distance: component j is scaled by (var_j / var_0)^(-Whiten/2)
	// and the residual by its mean variance likewise, so that a faint but
	// unusual structure (a thin crack) counts beside the brightness and
	// colour that dominate the raw patches. 0 is the plain projection.
	Whiten float64 `yaml:"whiten,omitempty"`
	// Groups are the categories the memory was built from, in the order
	// their rows lie in the bank (written by Build; empty: one group). A
	// map of an image whose category is known searches only its rows.
	Groups []Group `yaml:"groups,omitempty"`
}

// Group is one category's rows in the bank.
type Group struct {
	Name string `yaml:"name"`
	Rows int64  `yaml:"rows"`
}

// DemoConfig is the demo recipe's memory: 3x3 windows at full, half and
// quarter resolution (81 values), 64 components partly whitened (Whiten
// 0.25), a location every 4 pixels, 70,000 patches (18 MB of float32; about
// 10,000 per category of the photo set) chosen as a coreset per category
// (on the photo set's test, each image searched in its category: image /
// pixel AUROC and PRO 89.6 / 96.2 / 77.7, against 89.9 / 95.8 / 72.1
// unwhitened, 89.1 / 95.9 / 70.4 with 5x5 windows and 87.4 / 92.7 / 66.1
// with 5x5 windows drawn at random and searched in all categories; see the
// model card).
var DemoConfig = Config{Stride: 4, Scales: []int64{1, 2, 4}, Patch: 3, Dims: 64, Whiten: 0.25, Size: 70000, QueryChunk: 512, BankChunk: 4096, Coreset: true}

// Enabled reports whether the config asks for a memory.
func (c Config) Enabled() bool { return c.Size > 0 }

// FeatureDims is a patch's length before the projection: three colours,
// Patch x Patch pixels, every scale.
func (c Config) FeatureDims() int64 { return 3 * c.Patch * c.Patch * int64(len(c.Scales)) }

// Validate checks the shape.
func (c Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	if c.Stride < 1 {
		return fmt.Errorf("patchmemory: stride must be >= 1, got %d", c.Stride)
	}
	if len(c.Scales) == 0 {
		return fmt.Errorf("patchmemory: no scales")
	}
	for _, s := range c.Scales {
		if s < 1 {
			return fmt.Errorf("patchmemory: scale %d must be >= 1", s)
		}
	}
	if c.Patch < 1 || c.Patch%2 == 0 {
		return fmt.Errorf("patchmemory: patch side must be odd and >= 1, got %d", c.Patch)
	}
	if c.Dims < 1 || c.Dims > c.FeatureDims() {
		return fmt.Errorf("patchmemory: dims must be in [1, %d], got %d", c.FeatureDims(), c.Dims)
	}
	if !(c.Whiten >= 0 && c.Whiten <= 1) {
		return fmt.Errorf("patchmemory: whiten must be in [0, 1], got %v", c.Whiten)
	}
	if c.QueryChunk < 1 || c.BankChunk < 1 {
		return fmt.Errorf("patchmemory: query_chunk and bank_chunk must be >= 1, got %d and %d", c.QueryChunk, c.BankChunk)
	}
	return c.validateGroups()
}

func (c Config) validateGroups() error {
	if len(c.Groups) == 0 {
		return nil
	}
	seen := map[string]bool{}
	var rows int64
	for _, g := range c.Groups {
		if g.Name == "" || seen[g.Name] {
			return fmt.Errorf("patchmemory: group names must be unique and not empty, got %q", g.Name)
		}
		if g.Rows < 1 {
			return fmt.Errorf("patchmemory: group %q has %d rows", g.Name, g.Rows)
		}
		seen[g.Name] = true
		rows += g.Rows
	}
	if rows != c.Size {
		return fmt.Errorf("patchmemory: the groups hold %d rows, the memory %d", rows, c.Size)
	}
	return nil
}

// rowsOf is the bank rows [first, first+n) a map of an image of group name
// searches: the group's own, or every row when the name is not one of the
// memory's groups (an upload of unknown category, or a memory of one group).
func (c Config) rowsOf(name string) (first, n int64) {
	for _, g := range c.Groups {
		if g.Name == name {
			return first, g.Rows
		}
		first += g.Rows
	}
	return 0, c.Size
}

// Multiple is what the image side must divide by: the stride and, so that
// every scale still has a whole window, the largest scale.
func (c Config) Multiple() int {
	m := c.Stride
	for _, s := range c.Scales {
		m = lcm(m, s)
	}
	return int(m)
}

func lcm(a, b int64) int64 {
	x, y := a, b
	for y != 0 {
		x, y = y, x%y
	}
	return a / x * b
}

// Buffers are the memory's state-dict entries, so that a model file holds
// the memory with its weights.
const (
	bufMean  = "mean"
	bufBasis = "basis"
	bufBank  = "bank"
	bufNorms = "bank_norms"
	bufBuilt = "built"
	bufScale = "scale"
)

// shapes of the buffers for a config.
// A whitened memory also keeps the components' scales and, last, the
// residual's: [Dims+1].
func (c Config) shapes() map[string][]int64 {
	sh := map[string][]int64{
		bufMean:  {c.FeatureDims()},
		bufBasis: {c.FeatureDims(), c.Dims},
		bufBank:  {c.Size, c.Dims},
		bufNorms: {c.Size},
		bufBuilt: {1},
	}
	if c.Whiten > 0 {
		sh[bufScale] = []int64{c.Dims + 1}
	}
	return sh
}

// Memory is the memory's buffers in a model's store (zero until Build).
type Memory struct {
	cfg   Config
	mean  *ts.Tensor
	basis *ts.Tensor
	bank  *ts.Tensor
	norms *ts.Tensor
	built *ts.Tensor
	scale *ts.Tensor // nil unless Whiten > 0
	// seenBuilt caches a true Built (Map asks on every call; scorers map
	// from several goroutines).
	seenBuilt atomic.Bool
}

// New creates the memory's buffers under p (which should be Prefix), zero:
// Build fills them, or a checkpoint's load does.
func New(p layers.Path, c Config) (*Memory, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if !c.Enabled() {
		return nil, fmt.Errorf("patchmemory: size 0")
	}
	sh := c.shapes()
	m := &Memory{
		cfg:   c,
		mean:  p.Buffer(bufMean, sh[bufMean], layers.Zeros),
		basis: p.Buffer(bufBasis, sh[bufBasis], layers.Zeros),
		bank:  p.Buffer(bufBank, sh[bufBank], layers.Zeros),
		norms: p.Buffer(bufNorms, sh[bufNorms], layers.Zeros),
		built: p.Buffer(bufBuilt, sh[bufBuilt], layers.Zeros),
	}
	if c.Whiten > 0 {
		m.scale = p.Buffer(bufScale, sh[bufScale], layers.Zeros)
	}
	return m, nil
}

// Config is the memory's shape.
func (m *Memory) Config() Config { return m.cfg }

// SameShape reports whether c and o have the same buffers: they differ at
// most in how the memory is searched (the chunks) and chosen (Coreset).
func (c Config) SameShape(o Config) bool {
	return c.Stride == o.Stride && slices.Equal(c.Scales, o.Scales) && c.Patch == o.Patch && c.Dims == o.Dims && c.Size == o.Size &&
		(c.Whiten > 0) == (o.Whiten > 0)
}

// Reconfigure adopts c, of the same shape, for the next Build and Map. The
// groups stay those of the memory's rows until Build chooses new ones.
func (m *Memory) Reconfigure(c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if !m.cfg.SameShape(c) {
		return fmt.Errorf("patchmemory: a memory of shape %+v cannot become %+v", m.cfg, c)
	}
	c.Groups = m.cfg.Groups
	m.cfg = c
	return nil
}
