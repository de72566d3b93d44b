package server

import (
	"bytes"
	"image"
	"image/png"
	"path/filepath"
	"testing"

	"github.com/diad-project/diad/backend/visual"
	"github.com/diad-project/diad/shared"
)

// TestRawLatentsMatchTheirPreviews asks for the raw float16 latents next to
// the RGB previews: each step carries z_t and x0 shaped [4, h/8, w/8], and
// the preview the client could compute from the raw x0 is the server's.
func TestRawLatentsMatchTheirPreviews(t *testing.T) {
	e := startEnv(t, nil)
	req := shared.DenoiseRequest{Seed: 5, Products: []string{shared.ProductX0Latent, shared.ProductRawLatents}}
	_, frames, blobs := denoiseDatasetImage(t, e, filepath.Join("woven", "test", "hole", "000.png"), req)
	steps := 0
	for i, f := range frames {
		if f.Type != shared.TypeStep {
			continue
		}
		steps++
		got := map[string][]byte{}
		desc := map[string]shared.Blob{}
		for k, b := range f.Blobs {
			got[b.Name], desc[b.Name] = blobs[i][k], b
		}
		preview, err := png.Decode(bytes.NewReader(got[shared.ProductX0Latent]))
		if err != nil {
			t.Fatalf("step %d: x0 preview: %v", f.Step, err)
		}
		w, h := preview.Bounds().Dx(), preview.Bounds().Dy()
		for _, name := range []string{shared.BlobRawZt, shared.BlobRawX0} {
			b, ok := desc[name]
			if !ok {
				t.Fatalf("step %d has no %s blob (blobs %v)", f.Step, name, f.Blobs)
			}
			if len(b.Shape) != 3 || b.Shape[0] != 4 || b.Shape[1] != h || b.Shape[2] != w {
				t.Fatalf("step %d %s shape %v, want [4 %d %d]", f.Step, name, b.Shape, h, w)
			}
		}
		x0, err := shared.DecodeF16(desc[shared.BlobRawX0], got[shared.BlobRawX0])
		if err != nil {
			t.Fatal(err)
		}
		// Half precision moves a preview pixel by at most a level or two.
		mine := visual.LatentPreview(x0, w, h)
		theirs := image.NewRGBA(preview.Bounds())
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				theirs.Set(x, y, preview.At(x, y))
			}
		}
		for p := range mine.Pix {
			if d := int(mine.Pix[p]) - int(theirs.Pix[p]); d > 2 || d < -2 {
				t.Fatalf("step %d: preview from raw x0 differs at byte %d: %d vs %d", f.Step, p, mine.Pix[p], theirs.Pix[p])
			}
		}
	}
	if steps != 10 {
		t.Fatalf("%d steps, want 10", steps)
	}
}
