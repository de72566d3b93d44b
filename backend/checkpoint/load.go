package checkpoint

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/torchrt"

	"github.com/diad-project/diad/backend/layers"
)

// Mismatch is a tensor whose stored shape differs from the model's.
type Mismatch struct {
	Name  string  `json:"name"`
	Want  []int64 `json:"want"`
	Found []int64 `json:"found"`
}

// Report says how a checkpoint matched a store.
type Report struct {
	Loaded     []string   `json:"loaded"`
	Missing    []string   `json:"missing,omitempty"`    // in the model, not in the file
	Unexpected []string   `json:"unexpected,omitempty"` // in the file, not in the model
	Mismatched []Mismatch `json:"mismatched,omitempty"`
}

// ErrIncompatible is wrapped by LoadInto's errors about missing, unexpected or
// mis-shaped tensors.
var ErrIncompatible = errors.New("checkpoint does not match the model")

// String summarises the problems, naming the first few tensors of each kind.
// (A Report is not an error: a lenient load returns one with a nil error.)
func (r Report) String() string {
	var parts []string
	list := func(what string, names []string) {
		if len(names) == 0 {
			return
		}
		show := names
		if len(show) > 5 {
			show = show[:5]
		}
		parts = append(parts, fmt.Sprintf("%d %s (%s%s)", len(names), what, strings.Join(show, ", "), map[bool]string{true: ", ...", false: ""}[len(names) > 5]))
	}
	var mm []string
	for _, m := range r.Mismatched {
		mm = append(mm, fmt.Sprintf("%s: model %v, file %v", m.Name, m.Want, m.Found))
	}
	list("mis-shaped", mm)
	list("missing", r.Missing)
	list("unexpected", r.Unexpected)
	return strings.Join(parts, "; ")
}

// LoadOptions relaxes LoadInto's strictness explicitly.
type LoadOptions struct {
	// Prefixes restricts the load to model parameters under these prefixes
	// (e.g. only "first_stage_model." from an autoencoder checkpoint); empty = all.
	Prefixes []string
	// IgnoreUnexpected skips file tensors outside the model (e.g. the CLIP text
	// encoder in a reference .ckpt) instead of failing.
	IgnoreUnexpected bool
	// AllowMissing leaves model parameters absent from the file as they are.
	AllowMissing bool
	// Rename maps file names to model names before matching (nil = identity).
	Rename func(fileName string) string
}

func (o LoadOptions) selected(name string) bool {
	if len(o.Prefixes) == 0 {
		return true
	}
	for _, p := range o.Prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// Plan compares a checkpoint with a store without loading anything.
func Plan(store *layers.Store, r Reader, o LoadOptions) Report {
	var rep Report
	inFile := map[string]Entry{}
	for _, e := range r.Entries() {
		name := e.Name
		if o.Rename != nil {
			name = o.Rename(name)
		}
		if name == "" {
			continue
		}
		e.Name = name
		inFile[name] = e
	}
	seen := map[string]bool{}
	for _, p := range store.Params() {
		if !o.selected(p.Name) {
			continue
		}
		seen[p.Name] = true
		e, ok := inFile[p.Name]
		switch {
		case !ok:
			rep.Missing = append(rep.Missing, p.Name)
		case shapeString(e.Shape) != shapeString(p.Shape):
			rep.Mismatched = append(rep.Mismatched, Mismatch{Name: p.Name, Want: p.Shape, Found: e.Shape})
		default:
			rep.Loaded = append(rep.Loaded, p.Name)
		}
	}
	for name := range inFile {
		if !seen[name] && o.selected(name) {
			rep.Unexpected = append(rep.Unexpected, name)
		}
	}
	sort.Strings(rep.Missing)
	sort.Strings(rep.Unexpected)
	sort.Strings(rep.Loaded)
	return rep
}

// LoadInto copies a checkpoint's tensors into the store's parameters by name.
// It refuses (before changing anything) when a tensor is mis-shaped, or when
// tensors are missing or unexpected and the options do not allow it.
func LoadInto(store *layers.Store, r Reader, o LoadOptions) (Report, error) {
	rep := Plan(store, r, o)
	bad := len(rep.Mismatched) > 0 || (!o.AllowMissing && len(rep.Missing) > 0) || (!o.IgnoreUnexpected && len(rep.Unexpected) > 0)
	if bad {
		return rep, fmt.Errorf("%w: %s", ErrIncompatible, rep)
	}
	fileName := map[string]string{}
	for _, e := range r.Entries() {
		n := e.Name
		if o.Rename != nil {
			n = o.Rename(n)
		}
		fileName[n] = e.Name
	}
	for _, name := range rep.Loaded {
		p := store.Get(name)
		t, err := r.Load(fileName[name], store.Device())
		if err != nil {
			return rep, err
		}
		torchrt.NoGrad(func() { p.Tensor.Copy_(t) })
		t.MustDrop()
	}
	return rep, nil
}

// StoreTensors returns the store's tensors by name (for Save).
func StoreTensors(store *layers.Store) map[string]*ts.Tensor {
	out := make(map[string]*ts.Tensor, len(store.Params()))
	for _, p := range store.Params() {
		out[p.Name] = p.Tensor
	}
	return out
}
