package patchmemory

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/torchrt"
)

// flat are images of one colour, ImageNet-normalised [n, 3, side, side].
func flat(n, side int, rgb [3]float32) []float32 {
	mean := []float32{0.485, 0.456, 0.406}
	std := []float32{0.229, 0.224, 0.225}
	out := make([]float32, 0, n*3*side*side)
	for range n {
		for c := range 3 {
			for range side * side {
				out = append(out, (rgb[c]-mean[c])/std[c])
			}
		}
	}
	return out
}

// A memory built from two categories keeps each one's rows together and
// names them; an image compared with its own category's rows is normal,
// the same image compared with the other category's is not, and an image
// of unknown category is compared with everything.
func TestMapSearchesTheImagesCategory(t *testing.T) {
	const side, n = 16, 6
	c := tiny
	c.Coreset = true
	m, store := newMemory(t, c)
	defer store.Free()
	grey := flat(n, side, [3]float32{0.5, 0.5, 0.5})
	stripe := stripes(rand.New(rand.NewPCG(5, 6)), n, side)
	per := 3 * side * side
	err := m.Build(func(yield func(Batch) error) error {
		for i := range n { // the categories interleaved, as a loader mixes them
			for _, b := range []struct {
				pix   []float32
				group string
			}{{stripe, "stripes"}, {grey, "grey"}} {
				x := ts.MustOfSlice(b.pix[i*per:(i+1)*per]).MustView([]int64{1, 3, side, side}, true)
				err := yield(Batch{Images: x, Groups: []string{b.group}})
				x.MustDrop()
				if err != nil {
					return err
				}
			}
		}
		return nil
	}, 2*n, 3)
	if err != nil {
		t.Fatal(err)
	}
	g := m.Config().Groups
	if len(g) != 2 || g[0].Name != "stripes" || g[1].Name != "grey" || g[0].Rows+g[1].Rows != c.Size {
		t.Fatalf("groups %+v, want stripes then grey holding %d rows", g, c.Size)
	}
	if err := m.Config().Validate(); err != nil {
		t.Fatalf("the built config does not validate: %v", err)
	}
	// A grey image: as grey, as stripes, unknown.
	pix := append(append(grey[:per:per], grey[:per]...), grey[:per]...)
	var maps []float32
	err = torchrt.Do(func() error {
		x := ts.MustOfSlice(pix).MustView([]int64{3, 3, side, side}, true)
		defer x.MustDrop()
		mp := m.MapGroups(x, x, []string{"grey", "stripes", "none of them"})
		defer mp.MustDrop()
		maps = torchrt.Float32s(mp)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	meanOf := func(i int) float64 {
		s := 0.0
		for _, v := range maps[i*side*side : (i+1)*side*side] {
			s += float64(v)
		}
		return s / float64(side*side)
	}
	own, other, unknown := meanOf(0), meanOf(1), meanOf(2)
	if !(own < 0.1*other) || math.Abs(unknown-own) > 1e-5*(1+own) {
		t.Fatalf("mean distance of a grey image to grey %.4f, to stripes %.4f, to everything %.4f: want the first far below the second, equal to the third", own, other, unknown)
	}
}

func TestConfigGroupsValidate(t *testing.T) {
	ok := tiny
	ok.Groups = []Group{{"a", 100}, {"b", 200}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("%+v: %v", ok.Groups, err)
	}
	for _, g := range [][]Group{
		{{"a", 100}, {"b", 100}}, // rows do not add up to Size
		{{"a", 150}, {"a", 150}}, // a name twice
		{{"", 300}},              // no name
		{{"a", 300}, {"b", 0}},   // an empty group
	} {
		c := tiny
		c.Groups = g
		if c.Validate() == nil {
			t.Errorf("groups %+v: no error", g)
		}
	}
	if first, n := ok.rowsOf("b"); first != 100 || n != 200 {
		t.Errorf("rows of b: %d+%d, want 100+200", first, n)
	}
	if first, n := ok.rowsOf("c"); first != 0 || n != tiny.Size {
		t.Errorf("rows of an unknown group: %d+%d, want all", first, n)
	}
}
